"""The stop flag a run manager or CLI sets and the worker's callback reads (no heavy imports)."""

from __future__ import annotations

import time
from pathlib import Path

STOP_FILE = "STOP"


def stop_requested(run_dir: str | Path) -> bool:
    return (Path(run_dir) / STOP_FILE).exists()


def request_stop(run_dir: str | Path) -> None:
    (Path(run_dir) / STOP_FILE).write_text(str(time.time()))
