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
from trainers.diagnostics import disk_full, full_disk
from trainers.errors import ModelForgeError
from trainers.events import read_events, terminal_event
from trainers.runs.output_dir import check_output_dir, check_unclaimed

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


class RunDatabaseError(ModelForgeError):
    """The run database cannot be used; it is never overwritten or deleted to fix that."""

    error_type = "run_database"


class RunInUse(ValueError):
    """A run that cannot be deleted yet; `blocking` is the run to stop first."""

    def __init__(self, message: str, blocking: str):
        super().__init__(message)
        self.blocking = blocking


class RunRegistry:
    def __init__(self, data_dir: str | Path):
        # absolute: a worker runs in its run folder, where a relative path would mean another
        self.data_dir = Path(data_dir).resolve()
        self.runs_dir = self.data_dir / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "modelforge.db"
        self._check_database()

    def _check_database(self) -> None:
        """Open the database, or say what is wrong with it (damaged, read-only) and how to
        recover, before a server or a run depends on it."""
        try:
            with closing(self._connect()) as db:
                db.executescript(_SCHEMA)
                found = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
                if found != ["ok"]:
                    raise self._damaged("; ".join(found[:3]))
                # a write that is rolled back: a read-only file opens and reads fine
                db.execute("BEGIN IMMEDIATE")
                db.execute("CREATE TABLE write_check (x)")
                db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", "")
            if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
                raise self._damaged(str(exc)) from None
            if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
                raise RunDatabaseError(
                    f"The run database {self.db_path} cannot be written ({exc}).",
                    "Make it and its folder writable by this user (and check that the file "
                    "system is not mounted read-only), or use another data directory.") from None
            raise RunDatabaseError(f"The run database {self.db_path} cannot be used ({exc}).",
                                   "Check the file and the disk, or use another data "
                                   "directory.") from None

    def _damaged(self, detail: str) -> RunDatabaseError:
        return RunDatabaseError(
            f"The run database {self.db_path} is damaged or is not a ModelForge database "
            f"({detail}).",
            f"ModelForge leaves it untouched. Restore it from a backup, or move it aside to start "
            f"with an empty run history (mv {self.db_path} {self.db_path}.damaged); the run "
            f"folders in {self.runs_dir} are kept.")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)  # explicit BEGINs
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    # -- writes ---------------------------------------------------------------------------------
    def create(self, cfg: TrainConfig | None, source: str = "", kind: str = "train",
               config_dict: dict | None = None) -> dict:
        """Record a queued run and write its directory with config.json (`config_dict` for a
        job that is not training). A refused or failed create (an OSError on a full disk)
        leaves no folder and no record."""
        config = config_dict if config_dict is not None else cfg.model_dump(mode="json")
        output_dir = check_output_dir(cfg.output_dir, self.runs_dir, cfg.model_name) \
            if cfg is not None and cfg.output_dir else None
        resuming = None
        if cfg is not None and cfg.resume_from:  # trainers/runs/resume.py: refused before a folder
            from trainers.runs import resume

            resuming = resume.plan(self, config)
        run_id, run_dir = self._make_run_dir(cfg if cfg is not None else config)
        try:
            if resuming is not None:
                resume.write_resume_file(run_dir, resuming)
            self._insert(run_id, run_dir, config, kind, source, output_dir,
                         cfg.name if cfg is not None else "")
            return self.get(run_id)
        except BaseException:
            with closing(self._connect()) as db:
                db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            shutil.rmtree(run_dir, ignore_errors=True)
            raise

    def _make_run_dir(self, config: TrainConfig | dict) -> tuple[str, Path]:
        from trainers.runs.process import create_run_dir, new_run_id

        for attempt in range(5):  # a run id repeats only if two runs share second and random part
            run_id = new_run_id()
            try:
                return run_id, create_run_dir(config, self.runs_dir, run_id)
            except FileExistsError:
                if attempt == 4:
                    raise

    def _insert(self, run_id: str, run_dir: Path, config: dict, kind: str, source: str,
                output_dir: Path | None, name: str) -> None:
        db = self._connect()
        try:
            # IMMEDIATE takes the write lock before reading: concurrent submits from several
            # threads or processes get distinct, increasing numbers, and claim an output_dir once
            db.execute("BEGIN IMMEDIATE")
            if output_dir is not None:
                check_unclaimed(output_dir, self._claims(db))
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            name = name or f"{_default_name(config, kind)} #{seq}"  # runs told apart by number
            db.execute("INSERT INTO runs (id, seq, name, kind, source, status, created_at, config,"
                       " run_dir) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                       (run_id, seq, name, kind, source, time.time(), json.dumps(config),
                        str(run_dir)))
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
        finally:
            db.close()

    @staticmethod
    def _claims(db: sqlite3.Connection) -> dict[str, str]:
        """run id -> output_dir of every queued or running training run that sets one."""
        rows = db.execute("SELECT id, config FROM runs WHERE kind = 'train' AND "
                          "status IN ('queued', 'running')").fetchall()
        claims = {row["id"]: json.loads(row["config"]).get("output_dir") for row in rows}
        return {run_id: out for run_id, out in claims.items() if out}

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
        from trainers.runs.process import exit_description

        run = self.get(run_id)
        events = read_events(run["run_dir"])
        last = terminal_event(events)
        if last is None or last["type"] == "failed":
            # In a multi-process run, rank 0's own error is often only the echo of another
            # rank's death ("connection closed by peer"): report the rank that failed first.
            rank_failure = _rank_failure_summary(run["run_dir"])
            if rank_failure is not None:
                if last is not None:
                    rank_failure["rank0_error"] = last.get("message")
                return self.set_status(run_id, "failed", rank_failure)
        if last is not None:
            summary = {k: v for k, v in last.items() if k not in ("seq", "time")}
            return self.set_status(run_id, _TERMINAL_TO_STATUS[last["type"]], summary)
        full = full_disk([run["run_dir"]]) if returncode is None or returncode >= 0 else None
        if full:  # the worker could not write its failed event, nor train.log
            how = "ended" if returncode is None else exit_description(returncode)
            return self.set_status(run_id, "failed", disk_full(
                f"the training worker {how} and could not record why.", full))
        if returncode is None:  # a worker an earlier server started: its exit code is lost
            return self.set_status(run_id, "failed", {
                "error_type": "worker_crashed",
                "message": "The training worker ended without recording an outcome (its exit "
                           "status is unknown: it was started by an earlier server).",
                "hint": "See the run's train.log for what happened."})
        how = exit_description(returncode)
        if returncode < 0:
            return self.set_status(run_id, "failed", {
                "error_type": "killed",
                "message": f"The training worker was {how} before it finished.",
                "hint": "It was killed from outside: by a person, or by the kernel's "
                        "out-of-memory killer (check `dmesg`). If memory ran out, reduce "
                        "max_seq_length or the batch size and start again."})
        return self.set_status(run_id, "failed", {
            "error_type": "worker_crashed",
            "message": f"The training worker {how} before it finished, without saying why.",
            "hint": "See the run's train.log for the traceback."})

    def rename(self, run_id: str, name: str) -> dict:
        self.get(run_id)
        self._update(run_id, name=name.strip() or run_id)
        return self.get(run_id)

    def delete(self, run_id: str) -> None:
        """Remove the record and the run's files (the adapter included)."""
        run = self.get(run_id)
        if run["status"] in ("queued", "running"):
            raise RunInUse(f"run {run_id} is {run['status']}: stop it before deleting it", run_id)
        for other in self.list(kind="train", statuses=("queued", "running")):
            if (other.get("config") or {}).get("resume_from") == run_id:  # its checkpoint
                raise RunInUse(f"run {run_id} is resumed by {other['status']} run "
                               f"{other['id']}, which trains on from its checkpoint: stop "
                               f"{other['id']} (or let it finish) before deleting {run_id}",
                               other["id"])
        shutil.rmtree(run["run_dir"], ignore_errors=True)
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def mark_interrupted(self, run_id: str, message: str) -> dict:
        """A run that can no longer finish because the server that owned it went away."""
        last = terminal_event(read_events(self.get(run_id)["run_dir"]))
        if last is not None:  # it did finish, the old server just never recorded it
            return self.finish_from_events(run_id, 0)
        return self.set_status(run_id, "interrupted", {
            "error_type": "interrupted", "message": message,
            "hint": "Its files are kept; start it again from its config."})

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

    def list(self, kind: str | None = None, statuses: tuple[str, ...] = ()) -> list[dict]:
        """Newest first; optionally only one kind and some statuses."""
        where, params = [], []
        if kind:
            where.append("kind = ?")
            params.append(kind)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        query = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + \
            " ORDER BY seq DESC"
        with closing(self._connect()) as db:
            rows = db.execute(query, params).fetchall()
        return [_row_to_dict(r) for r in rows]


def _rank_failure_summary(run_dir: str) -> dict | None:
    """Why a multi-process run failed when a rank other than 0 failed first: that rank's own
    diagnosis (it writes rankN.failed.json), or torchrun's root-cause report of how it died."""
    from trainers.runs.process import exit_description, rank_failures, torchrun_root_cause

    root = torchrun_root_cause(Path(run_dir))
    failures = {f["rank"]: f for f in rank_failures(Path(run_dir))}
    if root is None or root[0] == 0:
        return None
    rank, code = root
    if rank in failures:
        own = failures[rank]
        return {**{k: v for k, v in own.items() if k != "rank"}, "failed_rank": rank,
                "message": f"rank {rank} failed: {own.get('message', '')}"}
    return {"error_type": "killed" if code < 0 else "rank_failed", "failed_rank": rank,
            "message": f"rank {rank} {exit_description(code)}; torchrun then stopped the "
                       "other ranks.",
            "hint": "A rank killed by SIGKILL was most likely out of memory (check `dmesg`); "
                    "train.log holds every rank's output."}


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
