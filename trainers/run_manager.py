"""The run manager: a FIFO queue of jobs, each run in its own worker process.

Submitting returns a run id at once. A scheduler thread starts queued jobs when a device slot is
free (one job per GPU by default, and one on the CPU when there is no GPU, so two jobs never
fight for the same memory), reaps finished workers and records their outcome. Jobs never depend
on a browser or an HTTP connection. No torch here: the server imports this.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from trainers import runs
from trainers.config import TrainConfig
from trainers.events import last_event, read_events
from trainers.registry import RunRegistry


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


@dataclass
class _Active:
    proc: subprocess.Popen
    devices: list[str]
    stop_deadline: float | None = None


class RunManager:
    def __init__(self, data_dir: str | Path, jobs_per_device: int = 1, stop_grace_s: float = 60.0,
                 devices: list[str] | None = None, poll_s: float = 0.2):
        self.registry = RunRegistry(data_dir)
        self.interrupted_at_start = self.registry.mark_orphans_interrupted()
        self.devices = devices if devices is not None else (visible_gpus() or ["cpu"])
        self.jobs_per_device = jobs_per_device
        self.stop_grace_s = stop_grace_s
        self.poll_s = poll_s
        self._queue: deque[str] = deque()
        self._active: dict[str, _Active] = {}
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-scheduler", daemon=True)
        self._thread.start()

    # -- submitting and stopping ------------------------------------------------------------
    def submit(self, cfg: TrainConfig, source: str = "api") -> dict:
        run = self.registry.create(cfg, source=source)
        with self._lock:
            self._queue.append(run["id"])
        return run

    def submit_job(self, kind: str, config: dict, source: str = "api") -> dict:
        """A non-training job (a benchmark): config.json is written by the caller's schema."""
        import json

        run = self.registry.create(None, source=source, kind=kind, config_dict=config)
        (Path(run["run_dir"]) / "config.json").write_text(json.dumps(config, indent=2))
        with self._lock:
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

    # -- reading ----------------------------------------------------------------------------
    def get(self, run_id: str) -> dict:
        """The run record plus its latest progress and its place in the queue."""
        run = self.registry.get(run_id)
        events = read_events(run["run_dir"])
        run["progress"] = last_event(events, "progress")
        run["started_event"] = last_event(events, "started")
        with self._lock:
            run["queue_position"] = (list(self._queue).index(run_id) + 1
                                     if run_id in self._queue else None)
        return run

    def events(self, run_id: str, after: int = 0) -> list[dict]:
        return read_events(self.registry.get(run_id)["run_dir"], after=after)

    def queue(self) -> list[str]:
        with self._lock:
            return list(self._queue)

    def active(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def wait_idle(self, timeout: float = 600) -> bool:
        """For tests and the CLI: block until nothing is queued or running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                if not self._queue and not self._active:
                    return True
            time.sleep(self.poll_s)
        return False

    def shutdown(self, stop_running: bool = True) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        if stop_running:
            with self._lock:
                for run_id, active in self._active.items():
                    runs.stop(Path(self.registry.get(run_id)["run_dir"]), active.proc, grace_s=5)

    # -- the scheduler ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - the scheduler must keep going
                print(f"run scheduler error: {exc!r}")
            self._closed.wait(self.poll_s)

    def _tick(self) -> None:
        with self._lock:
            self._reap()
            self._force_overdue_stops()
            while self._queue:
                devices = self._free_devices()
                if not devices:
                    break
                self._start(self._queue.popleft(), devices[:1])

    def _free_devices(self) -> list[str]:
        used: dict[str, int] = {}
        for active in self._active.values():
            for d in active.devices:
                used[d] = used.get(d, 0) + 1
        return [d for d in self.devices if used.get(d, 0) < self.jobs_per_device]

    def _start(self, run_id: str, devices: list[str]) -> None:
        run = self.registry.get(run_id)
        env = {} if devices == ["cpu"] else {"CUDA_VISIBLE_DEVICES": ",".join(devices)}
        try:
            proc = runs.launch(Path(run["run_dir"]), extra_env=env, kind=run["kind"])
        except OSError as exc:
            self.registry.set_status(run_id, "failed", {
                "error_type": "launch_failed", "message": f"Could not start the worker: {exc}",
                "hint": "Check that the data directory is writable and Python can start."})
            return
        self._active[run_id] = _Active(proc, devices)
        self.registry.mark_running(run_id, proc.pid)

    def _reap(self) -> None:
        for run_id, active in list(self._active.items()):
            if active.proc.poll() is None:
                continue
            del self._active[run_id]
            run = self.registry.finish_from_events(run_id, active.proc.returncode)
            if active.stop_deadline is not None and run["status"] == "failed" and \
                    (run["summary"] or {}).get("error_type") == "killed":
                self.registry.set_status(run_id, "stopped", {
                    "error_type": "stopped", "message": "Stopped by force: the worker did not "
                    f"stop within {self.stop_grace_s:.0f} s, so no final adapter was saved."})

    def _force_overdue_stops(self) -> None:
        import signal

        for run_id, active in self._active.items():
            if active.stop_deadline is not None and time.time() > active.stop_deadline:
                try:
                    os.killpg(active.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                active.stop_deadline = float("inf")  # killed once; _reap records it
