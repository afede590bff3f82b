"""Helpers for the dpo/rlhf tests: a real worker process, or an in-process run context."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from trainers.config import build_config
from trainers.events import read_events
from trainers.runs.registry import RunRegistry
from trainers.runs.process import cpu_share_env, launch

needs_unsloth = pytest.mark.skipif(importlib.util.find_spec("unsloth") is None,
                                   reason="unsloth is not installed")


def pairs_file(path: Path, source: Path, n: int) -> Path:
    """The first n lines of a preference file (small: the tests repeat them for a clear trend)."""
    lines = source.read_text(encoding="utf-8").splitlines()[:n]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start(home: Path, config: dict, at_once: int = 1):
    """Start one job in the real worker process (`python -m trainers.train.worker RUN_DIR`), one
    of `at_once` that share the cores."""
    registry = RunRegistry(home)
    run = registry.create(build_config(config), source="test")
    return registry, run, launch(Path(run["run_dir"]), cpu_share_env(at_once))


def train(home: Path, config: dict, timeout: float = 900) -> tuple[Path, list[dict]]:
    """Run one job to the end; return its run directory and events."""
    return finish(start(home, config), timeout)


def finish(started: tuple, timeout: float = 900) -> tuple[Path, list[dict]]:
    """Wait for a job from start() to end; return its run directory and events."""
    registry, run, proc = started
    proc.wait(timeout=timeout)
    registry.finish_from_events(run["id"], proc.returncode)
    return Path(run["run_dir"]), read_events(run["run_dir"])


def wait_for_event(run_dir: Path, match, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for event in read_events(run_dir):
            if match(event):
                return event
            if event["type"] in ("finished", "failed", "stopped"):
                raise AssertionError(f"run ended before the awaited event: {event}")
        time.sleep(0.3)
    raise AssertionError(f"no matching event within {timeout} s")


def progress(events: list[dict], stage: str) -> list[dict]:
    return [e for e in events if e["type"] == "progress" and e.get("stage") == stage]


def in_process_context(config: dict, run_dir: Path):
    """A RunContext prepared by the worker's own `RunContext.prepare`, up to the strategy
    (huggingface provider only: unsloth patches the process it is imported in)."""
    from trainers.events import EventWriter
    from trainers.train.worker import RunContext

    cfg = build_config(config)
    assert cfg.provider == "huggingface"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    ctx = RunContext(cfg, run_dir, EventWriter(run_dir))
    ctx.prepare()
    return ctx
