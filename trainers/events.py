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


def parse_event(line: bytes | str, seq: int) -> dict | None:
    """One complete line as an event with its 0-based `seq`, or None when it is not one: damaged
    JSON, or JSON that is not an object with a non-empty string `type`. Every reader skips those
    alike, so one bad line never hides the others or crashes a reader."""
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):  # also bad UTF-8, absurd nesting
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not event["type"]:
        return None
    return {**event, "seq": seq}  # the reader's seq, whatever the line holds


def read_events(run_dir: str | Path, after: int = 0) -> list[dict]:
    """Events after the first `after` lines (each gets its 0-based line index as `seq`)."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return []
    events = []
    with path.open("rb") as fh:
        for seq, line in enumerate(fh):
            if seq < after:
                continue
            if not line.endswith(b"\n"):
                break  # still being written
            event = parse_event(line, seq)
            if event is not None:
                events.append(event)
    return events


def last_event(events: list[dict], type_: str) -> dict | None:
    return next((e for e in reversed(events) if e["type"] == type_), None)


def terminal_event(events: list[dict]) -> dict | None:
    return next((e for e in reversed(events) if e["type"] in TERMINAL_TYPES), None)
