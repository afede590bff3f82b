"""The run manager: a FIFO queue of jobs, each run in its own worker process.

Submitting returns a run id at once. A scheduler thread starts queued jobs when a device slot is
free (one job per GPU by default, and one on the CPU when there is no GPU, so two jobs never
fight for the same memory), reaps finished workers and records their outcome. Jobs never depend
on a browser or an HTTP connection, nor on the server process: workers run in their own
process sessions.

When a server starts on a data directory an earlier server used, it recovers that server's runs:
  - running, and its worker is still alive -> re-attached: tracked until it ends, its device
    slot counted, so nothing else is started on top of it;
  - running, but its worker is gone -> `interrupted` (or its real outcome, if the worker wrote
    a final event before the old server could record it);
  - queued -> queued again, in their original order (they never started, so nothing is lost);
    a queued run created by `modelforge train` belongs to that command -> `interrupted`.
No torch here: the server imports this.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from trainers.runs import process as runs
from trainers.config import TrainConfig
from trainers.events import EVENTS_FILE, parse_event
from trainers.errors import ConfigError, ModelForgeError
from trainers.runs.preflight import check_gpu_only
from trainers.runs.registry import RunRegistry


def visible_gpus() -> list[str]:
    """GPU ids without importing torch: CUDA_VISIBLE_DEVICES, else nvidia-smi -L, else none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def check_fits(cfg: TrainConfig, devices: list[str]) -> None:
    """num_processes within this machine: one GPU per process, or one CPU core per process on a
    machine without GPUs. Refused at submit, so a run never waits for GPUs that do not exist."""
    if cfg.num_processes == 1:
        return
    if devices != ["cpu"]:
        have, what = len(devices), f"{len(devices)} GPUs"
    else:
        have = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            os.cpu_count() or 1
        what = f"{have} CPU cores and no GPU"
    if cfg.num_processes > have:
        raise ConfigError([{"field": "num_processes", "message":
                            f"{cfg.num_processes} is more than this server has ({what}): set "
                            f"num_processes to {have} or less"}])


def worker_alive(pid: int | None, run_dir: str) -> bool:
    """Is `pid` still the worker of `run_dir` (and not a reused pid of another process)?"""
    import psutil

    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and str(run_dir) in proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


class _AdoptedWorker:
    """A worker an earlier server started: polled like a Popen, but its exit code is lost."""

    def __init__(self, pid: int, run_dir: str):
        self.pid = pid
        self.run_dir = run_dir
        self.returncode = None

    def poll(self):
        return None if worker_alive(self.pid, self.run_dir) else "ended"


@dataclass
class _Active:
    proc: subprocess.Popen | _AdoptedWorker
    devices: list[str]
    stop_deadline: float | None = None


class _EventCursor:
    """A run's events.jsonl read incrementally: each call parses only the bytes added since.

    Keeps the start offset of every complete line (so `read(after)` seeks straight there) and
    the latest event of each type. Safe to share between threads.
    """

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.line_starts: list[int] = []
        self.latest: dict[str, dict] = {}
        self._lock = threading.Lock()

    def _update(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size <= self.offset:
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(size - self.offset)
        pos = 0
        while (end := chunk.find(b"\n", pos)) != -1:  # a half-written last line waits
            seq = len(self.line_starts)
            self.line_starts.append(self.offset + pos)
            event = parse_event(chunk[pos:end], seq)
            if event is not None:
                self.latest[event["type"]] = event
            pos = end + 1
        self.offset += pos

    def summary(self) -> tuple[dict[str, dict], int]:
        with self._lock:
            self._update()
            return dict(self.latest), len(self.line_starts)

    def read(self, after: int = 0, limit: int | None = None) -> list[dict]:
        with self._lock:
            self._update()
            count = len(self.line_starts)
            after = max(0, after)
            if after >= count:
                return []
            stop = count if limit is None else min(count, after + limit)
            end = self.line_starts[stop] if stop < count else self.offset
            with self.path.open("rb") as fh:
                fh.seek(self.line_starts[after])
                data = fh.read(end - self.line_starts[after])
        lines = data.split(b"\n")[: stop - after]
        events = (parse_event(line, after + i) for i, line in enumerate(lines))
        return [e for e in events if e is not None]


class DataDirInUse(ModelForgeError):
    error_type = "data_dir_in_use"


def _lock_data_dir(data_dir: Path):
    """An exclusive lock on DATA_DIR/server.lock for this process's lifetime (released by the
    OS if it dies; workers do not inherit it). Returns the open file, or None without fcntl."""
    try:
        import fcntl
    except ImportError:  # not on Windows: nothing guards a second server there
        return None
    fh = open(data_dir / "server.lock", "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        owner = fh.read().strip() or "unknown"
        fh.close()
        raise DataDirInUse(f"Another ModelForge server (pid {owner}) is using the data "
                           f"directory {data_dir}.",
                           "Stop that server, or start this one with another --data-dir.")
    fh.truncate(0)
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def server_using(data_dir: Path) -> str | None:
    """The pid of a server holding this data directory, or None (the lock is not kept)."""
    try:
        lock = _lock_data_dir(Path(data_dir))
    except DataDirInUse as exc:
        return exc.message.split("(pid ", 1)[1].split(")", 1)[0]
    if lock is not None:
        lock.close()
    return None


class RunManager:
    def __init__(self, data_dir: str | Path, jobs_per_device: int = 1, stop_grace_s: float = 60.0,
                 devices: list[str] | None = None, poll_s: float = 0.2,
                 worker_memory_bytes: int | None = None):
        self.registry = RunRegistry(data_dir)
        # one manager per data directory: two would both recover and start the same runs
        self._dir_lock = _lock_data_dir(self.registry.data_dir)
        self.devices = devices if devices is not None else (visible_gpus() or ["cpu"])
        self.jobs_per_device = jobs_per_device
        self.stop_grace_s = stop_grace_s
        self.poll_s = poll_s
        self.worker_memory_bytes = worker_memory_bytes
        self._queue: deque[str] = deque()
        self._active: dict[str, _Active] = {}
        self._cursors: dict[str, _EventCursor] = {}
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self.recovered = self._recover()
        self.interrupted_at_start = self.recovered["interrupted"]
        self._thread = threading.Thread(target=self._loop, name="run-scheduler", daemon=True)
        self._thread.start()

    # -- recovering an earlier server's runs ------------------------------------------------
    def _recover(self) -> dict[str, list[str]]:
        done: dict[str, list[str]] = {"reattached": [], "requeued": [], "interrupted": [],
                                      "finished": []}
        for run in reversed(self.registry.list(statuses=("queued", "running"))):  # oldest first
            run_id = run["id"]
            if run["status"] == "running" and worker_alive(run["pid"], run["run_dir"]):
                self._active[run_id] = _Active(_AdoptedWorker(run["pid"], run["run_dir"]),
                                               _worker_devices(run["pid"]))
                done["reattached"].append(run_id)
            elif run["status"] == "queued" and run["source"] != "cli":
                self._queue.append(run_id)
                done["requeued"].append(run_id)
            else:
                what = ("running, and its worker is gone" if run["status"] == "running" else
                        "queued by `modelforge train`, which did not start it")
                record = self.registry.mark_interrupted(
                    run_id, f"The server stopped while this run was {what}.")
                done["interrupted" if record["status"] == "interrupted" else "finished"].append(
                    run_id)
        return done

    # -- submitting and stopping ------------------------------------------------------------
    def submit(self, cfg: TrainConfig, source: str = "api") -> dict:
        check_fits(cfg, self.devices)
        check_gpu_only(cfg, self.devices)  # refused now, not five seconds into the run
        with self._lock:  # the queue's order is the order of the records' seq numbers
            run = self.registry.create(cfg, source=source)
            self._queue.append(run["id"])
        return run

    def submit_job(self, kind: str, config: dict, source: str = "api") -> dict:
        """A non-training job (a benchmark): config.json holds `config`, in its own schema."""
        with self._lock:
            run = self.registry.create(None, source=source, kind=kind, config_dict=config)
            self._queue.append(run["id"])
        return run

    def stop(self, run_id: str) -> dict:
        """Queued: removed from the queue. Running: graceful stop, forced after the grace time."""
        with self._lock:
            if run_id in self._queue:
                self._queue.remove(run_id)
                return self.registry.set_status(run_id, "stopped", {
                    "error_type": "stopped", "message": "Stopped before it started."})
            active = self._active.get(run_id)
            if active is not None and active.stop_deadline is None:
                runs.request_stop(self.registry.get(run_id)["run_dir"])
                active.stop_deadline = time.time() + self.stop_grace_s
        return self.registry.get(run_id)

    def delete(self, run_id: str) -> None:
        self.registry.delete(run_id)  # refuses queued and running runs
        with self._lock:
            self._cursors.pop(run_id, None)

    def rename(self, run_id: str, name: str) -> dict:
        return self.registry.rename(run_id, name)

    # -- reading ----------------------------------------------------------------------------
    def _cursor(self, run: dict) -> _EventCursor:
        with self._lock:
            cursor = self._cursors.get(run["id"])
            if cursor is None:
                cursor = self._cursors[run["id"]] = _EventCursor(Path(run["run_dir"]) / EVENTS_FILE)
            return cursor

    def get(self, run_id: str) -> dict:
        """The run record plus its latest progress, its started event and its place in the queue."""
        run = self.registry.get(run_id)
        latest, count = self._cursor(run).summary()
        run["progress"] = latest.get("progress")
        run["started_event"] = latest.get("started")
        run["eval"] = latest.get("eval")
        run["events_count"] = count
        run["queue_position"] = self.queue_position(run_id)
        return run

    def events(self, run_id: str, after: int = 0, limit: int | None = None) -> list[dict]:
        """Events with seq >= after (at most `limit`), read incrementally."""
        return self._cursor(self.registry.get(run_id)).read(after, limit)

    def queue_position(self, run_id: str) -> int | None:
        with self._lock:
            return list(self._queue).index(run_id) + 1 if run_id in self._queue else None

    def queue(self) -> list[str]:
        with self._lock:
            return list(self._queue)

    def active(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def counts(self) -> dict:
        """Queued and running counts without taking the lock (for a health check)."""
        return {"queued": len(self._queue), "running": len(self._active)}

    def wait_idle(self, timeout: float = 600) -> bool:
        """For tests and the CLI: block until nothing is queued or running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                if not self._queue and not self._active:
                    return True
            time.sleep(self.poll_s)
        return False

    def shutdown(self, stop_running: bool = True) -> list[str]:
        """Stop scheduling. With stop_running, stop the workers too (graceful, then forced);
        without, they keep training and the next server on this data directory re-attaches
        them. Returns the ids of the runs still running."""
        self._closed.set()
        self._thread.join(timeout=5)
        with self._lock:
            still = list(self._active)
            if stop_running:
                for run_id, active in self._active.items():
                    proc = active.proc if isinstance(active.proc, subprocess.Popen) else None
                    runs.stop(Path(self.registry.get(run_id)["run_dir"]), proc, grace_s=5)
        if self._dir_lock is not None:
            self._dir_lock.close()  # releases the lock
            self._dir_lock = None
        return still

    # -- the scheduler ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - the scheduler must keep going
                print(f"run scheduler error: {exc!r}", file=sys.stderr, flush=True)
            self._closed.wait(self.poll_s)

    def _tick(self) -> None:
        with self._lock:
            self._reap()
            self._force_overdue_stops()
            while self._queue:
                run_id = self._queue[0]
                needed = self._gpus_needed(run_id)
                if self.devices != ["cpu"] and needed > len(self.devices):
                    self._queue.popleft()
                    self.registry.set_status(run_id, "failed", {
                        "error_type": "not_enough_gpus",
                        "message": f"The run needs {needed} GPUs (num_processes) and this "
                                   f"server has {len(self.devices)}.",
                        "hint": f"Set num_processes to {len(self.devices)} or less."})
                    continue
                devices = self._free_devices()
                if self.devices != ["cpu"] and len(devices) < needed:
                    break  # FIFO: the head of the queue waits until enough GPUs are free
                if not devices:
                    break
                self._start(self._queue.popleft(),
                            devices[:needed] if self.devices != ["cpu"] else devices[:1])

    def _gpus_needed(self, run_id: str) -> int:
        """A training run takes num_processes GPUs (on a CPU-only host, the one CPU slot)."""
        run = self.registry.get(run_id)
        return runs.num_processes(Path(run["run_dir"])) if run["kind"] == "train" else 1

    def _free_devices(self) -> list[str]:
        used: dict[str, int] = {}
        for active in self._active.values():
            for d in active.devices:
                used[d] = used.get(d, 0) + 1
        return [d for d in self.devices if used.get(d, 0) < self.jobs_per_device]

    def _start(self, run_id: str, devices: list[str]) -> None:
        run = self.registry.get(run_id)
        env = (runs.cpu_share_env(self.jobs_per_device) if devices == ["cpu"]
               else {"CUDA_VISIBLE_DEVICES": ",".join(devices)})
        try:
            proc = runs.launch(Path(run["run_dir"]), extra_env=env, kind=run["kind"])
        except OSError as exc:
            self.registry.set_status(run_id, "failed", {
                "error_type": "launch_failed", "message": f"Could not start the worker: {exc}",
                "hint": "Check that the data directory is writable and Python can start."})
            return
        self._active[run_id] = _Active(proc, devices)
        self.registry.mark_running(run_id, proc.pid)
        if self.worker_memory_bytes:
            self._limit_memory(proc)

    def _limit_memory(self, proc: subprocess.Popen) -> None:
        """Cap the worker's data memory (RLIMIT_DATA): an allocation past it fails inside the
        worker, which reports out-of-memory, instead of the kernel killing a process at random.
        Set right after the start, long before the worker has imported torch."""
        import psutil

        try:
            psutil.Process(proc.pid).rlimit(psutil.RLIMIT_DATA,
                                            (self.worker_memory_bytes, self.worker_memory_bytes))
        except psutil.NoSuchProcess:
            pass  # it already ended; _reap records how

    def _reap(self) -> None:
        for run_id, active in list(self._active.items()):
            if active.proc.poll() is None:
                continue
            # record the outcome before forgetting the worker, so a failure here is retried
            run = self.registry.finish_from_events(run_id, active.proc.returncode)
            del self._active[run_id]
            killed = (run["summary"] or {}).get("error_type") == "killed" or \
                isinstance(active.proc, _AdoptedWorker)  # an adopted worker's signal is unknown
            if active.stop_deadline is not None and run["status"] == "failed" and killed:
                self.registry.set_status(run_id, "stopped", {
                    "error_type": "stopped", "message": "Stopped by force: the worker did not "
                    f"stop within {self.stop_grace_s:.0f} s, so no final adapter was saved."})

    def _force_overdue_stops(self) -> None:
        for run_id, active in self._active.items():
            if active.stop_deadline is not None and time.time() > active.stop_deadline:
                try:
                    os.killpg(active.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                active.stop_deadline = float("inf")  # killed once; _reap records it


def _worker_devices(pid: int) -> list[str]:
    """The devices a re-attached worker holds, from its CUDA_VISIBLE_DEVICES."""
    import psutil

    try:
        visible = psutil.Process(pid).environ().get("CUDA_VISIBLE_DEVICES")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        visible = None
    return [d for d in visible.split(",") if d.strip()] if visible else ["cpu"]
