"""The run registry: one SQLite table under the data directory (stdlib only).

Statuses: queued, running, succeeded, failed, stopped, interrupted. A connection per call keeps
it safe across threads and processes (the CLI and the server may share a data directory).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from trainers.config import TrainConfig
from trainers.events import read_events, terminal_event

STATUSES = ("queued", "running", "succeeded", "failed", "stopped", "interrupted")
_TERMINAL_TO_STATUS = {"finished": "succeeded", "stopped": "stopped", "failed": "failed"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'train',
    source TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    pid INTEGER,
    config TEXT NOT NULL,
    summary TEXT,
    run_dir TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_seq ON runs(seq);
"""


class RunRegistry:
    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.runs_dir = self.data_dir / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "modelforge.db"
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    # -- writes ---------------------------------------------------------------------------------
    def create(self, cfg: TrainConfig, source: str = "", kind: str = "train",
               config_dict: dict | None = None) -> dict:
        """Record a queued run and write its directory with config.json."""
        from trainers.runs import create_run_dir, new_run_id

        run_id = new_run_id()
        run_dir = create_run_dir(cfg, self.runs_dir, run_id) if cfg is not None else \
            self._plain_run_dir(run_id)
        config = config_dict if config_dict is not None else cfg.model_dump(mode="json")
        name = (cfg.name if cfg is not None else "") or _default_name(config, kind)
        with closing(self._connect()) as db, db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            db.execute("INSERT INTO runs (id, seq, name, kind, source, status, created_at, config,"
                       " run_dir) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                       (run_id, seq, name, kind, source, time.time(), json.dumps(config),
                        str(run_dir)))
        return self.get(run_id)

    def _plain_run_dir(self, run_id: str) -> Path:
        run_dir = self.runs_dir / run_id
        run_dir.mkdir(parents=True)
        return run_dir

    def mark_running(self, run_id: str, pid: int) -> None:
        self._update(run_id, status="running", started_at=time.time(), pid=pid)

    def set_status(self, run_id: str, status: str, summary: dict | None = None) -> dict:
        assert status in STATUSES, status
        fields = {"status": status}
        if status not in ("queued", "running"):
            fields["finished_at"] = time.time()
        if summary is not None:
            fields["summary"] = json.dumps(summary, default=str)
        self._update(run_id, **fields)
        return self.get(run_id)

    def finish_from_events(self, run_id: str, returncode: int | None) -> dict:
        """Set the final status from the worker's terminal event, or from how it died."""
        from trainers.runs import exit_description

        run = self.get(run_id)
        events = read_events(run["run_dir"])
        last = terminal_event(events)
        if last is not None:
            summary = {k: v for k, v in last.items() if k not in ("seq", "time")}
            return self.set_status(run_id, _TERMINAL_TO_STATUS[last["type"]], summary)
        how = exit_description(returncode)
        error_type = "killed" if returncode is not None and returncode < 0 else "worker_crashed"
        hint = ("The worker was killed from outside (often the kernel's out-of-memory killer: "
                "check `dmesg`); reduce max_seq_length or the batch size and start again."
                if error_type == "killed" else "See the run's train.log for the traceback.")
        return self.set_status(run_id, "failed", {
            "error_type": error_type, "message": f"The training worker {how} before it finished.",
            "hint": hint})

    def rename(self, run_id: str, name: str) -> dict:
        self.get(run_id)
        self._update(run_id, name=name.strip() or run_id)
        return self.get(run_id)

    def delete(self, run_id: str) -> None:
        """Remove the record and the run's files (the adapter included)."""
        run = self.get(run_id)
        if run["status"] in ("queued", "running"):
            raise ValueError(f"run {run_id} is {run['status']}: stop it before deleting it")
        shutil.rmtree(run["run_dir"], ignore_errors=True)
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def mark_orphans_interrupted(self) -> list[str]:
        """At server start: runs a previous server left queued or running did not finish here."""
        ids = [r["id"] for r in self.list() if r["status"] in ("queued", "running")]
        for run_id in ids:
            run = self.get(run_id)
            last = terminal_event(read_events(run["run_dir"]))
            if last is not None:  # it did finish, the old server just never recorded it
                self.finish_from_events(run_id, 0)
                continue
            self.set_status(run_id, "interrupted", {
                "error_type": "interrupted",
                "message": f"The server stopped while this run was {run['status']}.",
                "hint": "Its files are kept; start it again from its config."})
        return ids

    def _update(self, run_id: str, **fields) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with closing(self._connect()) as db, db:
            db.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    # -- reads ----------------------------------------------------------------------------------
    def get(self, run_id: str) -> dict:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return _row_to_dict(row)

    def list(self, kind: str | None = None) -> list[dict]:
        query = "SELECT * FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY seq DESC"
        with closing(self._connect()) as db:
            rows = db.execute(query, (kind,) if kind else ()).fetchall()
        return [_row_to_dict(r) for r in rows]


def _row_to_dict(row: sqlite3.Row) -> dict:
    run = dict(row)
    run["config"] = json.loads(run["config"])
    run["summary"] = json.loads(run["summary"]) if run["summary"] else None
    return run


def _default_name(config: dict, kind: str) -> str:
    model = str(config.get("model_name", "model")).rstrip("/").rsplit("/", 1)[-1]
    if kind != "train":
        return f"{kind} {model}"
    return f"{config.get('provider', '')} {config.get('strategy', '')} {model}".strip()
