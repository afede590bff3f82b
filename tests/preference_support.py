"""Helpers for the dpo/rlhf tests: waiting on a worker's events, an in-process run context."""

from __future__ import annotations

import json
import time
from pathlib import Path

from trainers.config import build_config
from trainers.events import read_events


def pairs_file(path: Path, source: Path, n: int) -> Path:
    """The first n lines of a preference file (small: the tests repeat them for a clear trend)."""
    lines = source.read_text(encoding="utf-8").splitlines()[:n]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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
