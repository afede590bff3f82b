"""What the API, the dashboard and the CLI each need of a job (a training run or a benchmark)
beyond the registry and the run manager: where a run's adapter is, a benchmark's label, and
following a job from the command line. Server side: no torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from trainers.errors import ConfigError, ModelForgeError

ACTIVE_STATUSES = ("queued", "running")
ADAPTER_STATUSES = ("succeeded", "stopped")  # the outcomes that save an adapter


class AdapterNotReady(ModelForgeError):
    """The run is still queued or running (HTTP 409)."""

    error_type = "conflict"


class NoAdapter(ModelForgeError):
    """The run ended without saving an adapter (HTTP 404)."""

    error_type = "no_adapter"


# --- a run's adapter ------------------------------------------------------------------------------

def adapter_path(run: dict) -> Path:
    """Where a run's adapter is saved: its final summary says (output_dir may move it), else
    the run directory's adapter/. Whether it is there yet is adapter_dir's question."""
    summary = run.get("summary") or {}
    return Path(summary.get("adapter_dir") or Path(run["run_dir"]) / "adapter")


def adapter_dir(run: dict) -> Path:
    """The saved adapter of a finished run, else AdapterNotReady or NoAdapter saying why."""
    if run["status"] in ACTIVE_STATUSES:
        raise AdapterNotReady(f"Run {run['id']} is {run['status']}: it has no final adapter yet.",
                              "Wait until it has finished.")
    path = adapter_path(run)
    if not (path / "adapter_config.json").is_file():
        raise NoAdapter(f"Run {run['id']} ({run['status']}) saved no adapter.",
                        "Only succeeded runs, and runs stopped gracefully, have one.")
    return path


# --- benchmarks -----------------------------------------------------------------------------------

def benchmark_name(spec) -> str:
    """A benchmark's label in the history: the spec's name, else "benchmark <model>"."""
    return spec.name or f"benchmark {Path(spec.model).name}"


def create_benchmark(registry, spec, source: str) -> dict:
    """Record a benchmark (its config.json is the spec) for a caller that runs it itself."""
    run = registry.create(None, source=source, kind="benchmark",
                          config_dict=spec.model_dump(mode="json"))
    return registry.rename(run["id"], benchmark_name(spec))


def submit_benchmark(manager, spec, source: str) -> dict:
    """Queue a benchmark in the run manager, like a training run; a GPU-only choice on a
    machine without a GPU is a ConfigError now, not a failure in the queue."""
    from trainers.benchmark.spec import gpu_only_problems

    if gpu_only_problems(spec, manager.devices):
        raise ConfigError(gpu_only_problems(spec, manager.devices))
    run = manager.submit_job("benchmark", spec.model_dump(mode="json"), source=source)
    return manager.registry.rename(run["id"], benchmark_name(spec))


# --- following a job ------------------------------------------------------------------------------

def follow(registry, run_id: str, on_event: Callable[[dict], None],
           on_stop_requested: Callable[[], None] = lambda: None, poll_s: float = 0.3) -> dict:
    """Launch a recorded job's worker, give each of its events to `on_event` until it ends and
    return the final record. The first Ctrl-C asks the job to stop gracefully (and calls
    `on_stop_requested`), the second forces it."""
    from trainers.events import read_events
    from trainers.runs import process

    run = registry.get(run_id)
    run_dir = Path(run["run_dir"])
    proc = process.launch(run_dir, kind=run["kind"])
    registry.mark_running(run_id, proc.pid)
    seen, stop_sent = 0, False

    def new_events() -> None:
        nonlocal seen
        for event in read_events(run_dir, after=seen):
            seen = event["seq"] + 1
            on_event(event)

    while True:
        try:
            new_events()
            if proc.poll() is not None:
                new_events()  # what it wrote just before it ended
                break
            time.sleep(poll_s)
        except KeyboardInterrupt:
            if stop_sent:
                process.stop(run_dir, proc, grace_s=0)
            else:
                process.request_stop(run_dir)
                stop_sent = True
                on_stop_requested()
    return registry.finish_from_events(run_id, proc.returncode)
