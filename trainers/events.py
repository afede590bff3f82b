"""The events file: the contract between a worker and everything else.

One JSON object per line, append-only, each with a `type` and a `time`. Types: started,
progress, eval, saved, stage, finished, failed, stopped (see README "Run directory").
Readers wait for a half-written last line (the worker may be mid-write) and skip a
damaged complete one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

EVENTS_FILE = "events.jsonl"
TERMINAL_TYPES = ("finished", "failed", "stopped")


class EventWriter:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self._fh = self.path.open("a", encoding="utf-8")

    def emit(self, type_: str, **fields) -> dict:
        event = {"type": type_, "time": round(time.time(), 3), **fields}
        self._fh.write(json.dumps(event, default=str) + "\n")
        self._fh.flush()
        return event

    def close(self) -> None:
        self._fh.close()


def read_events(run_dir: str | Path, after: int = 0) -> list[dict]:
    """Events after the first `after` ones (each gets its 0-based index as `seq`)."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return []
    events = []
    with path.open(encoding="utf-8") as fh:
        for seq, line in enumerate(fh):
            if seq < after:
                continue
            if not line.endswith("\n"):
                break  # still being written
            try:
                events.append({"seq": seq, **json.loads(line)})
            except json.JSONDecodeError:
                continue  # a damaged complete line is skipped, as the run manager's reader does
    return events


def last_event(events: list[dict], type_: str) -> dict | None:
    return next((e for e in reversed(events) if e["type"] == type_), None)


def terminal_event(events: list[dict]) -> dict | None:
    return next((e for e in reversed(events) if e["type"] in TERMINAL_TYPES), None)
