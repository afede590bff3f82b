"""Training runs in the real worker process (`python -m trainers.train.worker RUN_DIR`), launched
as the server's queue launches them. Runs started together split the cores, as the queue's CPU
jobs do (`cpu_share_env`): each imports torch while another waits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from trainers.config import build_config
from trainers.events import read_events
from trainers.runs.process import cpu_share_env, launch
from trainers.runs.registry import RunRegistry


def start(home: Path, config: dict, extra_env: dict | None = None, at_once: int = 1) -> tuple:
    """(registry, record, process) of one job started in HOME, one of `at_once` sharing the
    cores."""
    registry = RunRegistry(home)
    record = registry.create(build_config(config), source="test")
    env = {**(extra_env or {}), **cpu_share_env(at_once)}
    return registry, record, launch(Path(record["run_dir"]), extra_env=env)


def finish(started: tuple, timeout: float = 900) -> tuple[dict, list[dict]]:
    """(final record, events) of a job from start(), once it has ended."""
    registry, record, proc = started
    proc.wait(timeout=timeout)
    return registry.finish_from_events(record["id"], proc.returncode), \
        read_events(record["run_dir"])


def train(home: Path, config: dict, extra_env: dict | None = None,
          timeout: float = 900) -> tuple[dict, list[dict]]:
    """(final record, events) of one job run to its end."""
    return finish(start(home, config, extra_env), timeout)


def train_side_by_side(runs: dict) -> dict:
    """name -> (final record, events) for name -> (home, config) or (home, config, extra_env),
    all started at once."""
    started = {name: start(home, config, *env, at_once=len(runs))
               for name, (home, config, *env) in runs.items()}
    return {name: finish(job) for name, job in started.items()}


# Unsloth runs in the workers only: importing it into the pytest process (as
# pytest.importorskip("unsloth") would) patches TRL for every test after it.
needs_unsloth = pytest.mark.skipif(importlib.util.find_spec("unsloth") is None,
                                   reason="unsloth is not installed")
