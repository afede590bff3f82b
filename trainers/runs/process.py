"""Run directories and worker processes (no torch here: the server and CLI import this).

A run directory holds config.json (the resolved config), events.jsonl, train.log and the
adapter. `launch` starts `python -m trainers.train.worker RUN_DIR` in a new process session, so a
crash or an out-of-memory kill cannot take the caller down, and stopping can be forced.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from trainers.config import TrainConfig, save_config
from trainers.runs.stop_flag import request_stop

LOG_FILE = "train.log"


def default_data_dir() -> Path:
    """MODELFORGE_HOME, else $XDG_DATA_HOME/modelforge, else ~/.local/share/modelforge."""
    if os.environ.get("MODELFORGE_HOME"):
        return Path(os.environ["MODELFORGE_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "modelforge"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def create_run_dir(config: TrainConfig | dict, runs_dir: Path, run_id: str | None = None) -> Path:
    """RUN_DIR with its config.json (a TrainConfig, or a job's own config dict). A folder whose
    config.json cannot be written (a full disk) is removed again."""
    run_dir = Path(runs_dir) / (run_id or new_run_id())
    run_dir.mkdir(parents=True, exist_ok=False)
    try:
        if isinstance(config, TrainConfig):
            save_config(config, run_dir / "config.json")
        else:
            (run_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


# What a job of each kind runs: python -m MODULE RUN_DIR
WORKER_MODULES = {"train": "trainers.train.worker", "benchmark": "trainers.benchmark.runner"}


def worker_command(run_dir: Path, kind: str = "train") -> list[str]:
    """One process, or torchrun with one process per GPU when the config asks for several."""
    module = WORKER_MODULES[kind]
    processes = num_processes(run_dir) if kind == "train" else 1
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={processes}", "-m", module, str(run_dir)]
    return [sys.executable, "-m", module, str(run_dir)]


def num_processes(run_dir: Path) -> int:
    """The run's num_processes (1 when the config is unreadable: the worker will say why)."""
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
        return max(1, int(config.get("num_processes", 1)))
    except (OSError, ValueError, TypeError):
        return 1


def rank_failures(run_dir: Path) -> list[dict]:
    """What each failed rank of a multi-process run wrote before it died (rank0 writes events)."""
    failures = []
    for path in sorted(Path(run_dir).glob("rank*.failed.json")):
        try:
            failures.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return failures


def torchrun_root_cause(run_dir: Path) -> tuple[int, int] | None:
    """(rank, exit code) of the first rank to fail, from torchrun's "Root Cause" report."""
    import re

    text = log_tail(run_dir, 40000)
    block = text.rsplit("Root Cause (first observed failure):", 1)
    if len(block) < 2:
        return None
    found = re.search(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", block[1], re.S)
    return (int(found.group(1)), int(found.group(2))) if found else None


def is_server_secret(name: str) -> bool:
    """The server's own credentials (MODELFORGE_TOKEN and the like). HF_TOKEN is not one: a
    worker needs it for gated models and to push to the Hub."""
    return name.startswith("MODELFORGE_") and \
        any(word in name for word in ("TOKEN", "PASSWORD", "SECRET", "KEY"))


# torch's CPU threads (GNU OpenMP) spin about 300,000 times at each barrier before they sleep.
# Where processes share the cores (two CPU jobs, a Playground answer beside a run, a busy
# machine) each spins on the other's time: two demo runs on 2 cores trained at 510 tokens/s each
# instead of 23,000 alone. A short spin keeps a lone run's speed and shares the cores (6,400
# each). An operator's own GOMP_SPINCOUNT wins.
OPENMP_SHORT_SPIN = {"GOMP_SPINCOUNT": "10000"}


def child_env(extra: dict | None = None) -> dict:
    """The environment for a worker or helper process: the server's, less its secrets (a
    worker runs code that comes with models and data), with this project importable."""
    env = dict(OPENMP_SHORT_SPIN)
    env.update({k: v for k, v in os.environ.items() if not is_server_secret(k)})
    env.update(extra or {})
    project_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    return env


# A helper process (a data preview, the config check's read of the data) caps its own data
# memory at this many GiB, the way a worker is capped with --worker-memory-gb: one request
# cannot take the machine's memory. MODELFORGE_HELPER_MEMORY_GB changes it.
HELPER_MEMORY_ENV = "MODELFORGE_HELPER_MEMORY_GB"
HELPER_MEMORY_GB = 2.0


def helper_memory_bytes() -> int:
    text = os.environ.get(HELPER_MEMORY_ENV, "")
    try:
        gib = float(text) if text else HELPER_MEMORY_GB
    except ValueError:
        gib = -1.0
    if not gib > 0:
        from trainers.errors import ModelForgeError

        raise ModelForgeError(f"{HELPER_MEMORY_ENV}={text!r} is not a positive number.",
                              f"Set it to the GiB one helper process may use, e.g. "
                              f"{HELPER_MEMORY_GB:g}, or unset it.")
    return int(gib * 2**30)


def cpu_share_env(jobs: int) -> dict:
    """The environment for one of `jobs` CPU jobs that run at once: the cores split between
    them (two demo runs on 2 cores, one thread each: 13,600 tokens/s each, against 6,400 with
    two threads each). An operator's own OMP_NUM_THREADS wins."""
    if jobs <= 1 or "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}


HELPER_NICENESS = 10  # a helper's CPU yields to the server's, so the API stays responsive


def limit_own_resources(memory_bytes: int) -> None:
    """What a helper process does first: cap its data memory (RLIMIT_DATA, as the workers), so
    an allocation past it raises MemoryError here instead of the kernel killing a process at
    random (Linux only), and lower its CPU priority below the server's."""
    if sys.platform.startswith("linux"):
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    if hasattr(os, "nice"):
        os.nice(HELPER_NICENESS)


def launch(run_dir: Path, extra_env: dict | None = None, kind: str = "train") -> subprocess.Popen:
    """Start the worker; its stdout and stderr go to RUN_DIR/train.log."""
    env = child_env({"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                     **(extra_env or {})})
    log = open(Path(run_dir) / LOG_FILE, "ab")
    try:
        return subprocess.Popen(worker_command(run_dir, kind), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=str(run_dir),
                                start_new_session=True)
    finally:
        log.close()


def stop(run_dir: Path, proc: subprocess.Popen | None, grace_s: float = 60.0) -> str:
    """Graceful stop (the trainer stops at the next step and saves), forced after grace_s.

    Returns "graceful" or "forced".
    """
    request_stop(run_dir)
    if proc is None:
        return "graceful"
    try:
        proc.wait(timeout=grace_s)
        return "graceful"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "forced"


def exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:  # a real-time signal has no name
            name = "SIG" + str(-returncode)
        return f"killed by signal {name} ({-returncode})"
    return f"exited with code {returncode}"


def log_tail(run_dir: Path, max_bytes: int = 8000) -> str:
    path = Path(run_dir) / LOG_FILE
    if not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - max_bytes))
        return fh.read().decode("utf-8", errors="replace")
