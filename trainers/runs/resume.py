"""Resuming a run from its last checkpoint, as a new run linked to the old one.

A checkpoint (RUN_DIR/checkpoints/checkpoint-N, written every `save_steps` and at a graceful
stop) holds the adapter, the optimizer, the scheduler, the RNG states and the trainer state, so
transformers' `Trainer.train(resume_from_checkpoint=...)` continues at step N + 1 with the same
learning-rate schedule and the same next batch (it skips the N batches already seen, in the
seeded order). ModelForge never writes into the old run's folder: the new run has its own
directory, its config says `resume_from: OLD_ID`, and RUN_DIR/resume.json (written when the run
is created) names the checkpoint the worker loads. Server side: no torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from trainers.errors import ConfigError, ModelForgeError

RESUMABLE_STATUSES = ("stopped", "failed", "interrupted")
RESUME_FILE = "resume.json"
CHECKPOINTS = "checkpoints"  # trainers.train.worker.CHECKPOINT_DIR
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")

# Fields a resumed run may set differently from the run it continues: how it is labelled,
# logged and saved, and how far it goes. Every other field must match the checkpoint's run.
MAY_DIFFER = ("name", "output_dir", "resume_from", "logging_steps", "save_steps", "eval_steps",
              "report_to", "max_steps", "num_train_epochs")


class NotResumable(ModelForgeError):
    """The run cannot be resumed (HTTP 409): still active, finished, or without a checkpoint."""

    error_type = "not_resumable"


def last_checkpoint(run_dir: str | Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint of a run (one with its trainer state) and its step."""
    found = []
    for path in (Path(run_dir) / CHECKPOINTS).glob("checkpoint-*"):
        match = _CHECKPOINT.fullmatch(path.name)
        if match and (path / "trainer_state.json").is_file() and not path.is_symlink():
            found.append((int(match.group(1)), path))
    if not found:
        return None
    step, path = max(found)
    return path, step


def check_resumable(run: dict) -> tuple[Path, int]:
    """The checkpoint to resume `run` from, or NotResumable saying why not and what to do."""
    run_id, status = run["id"], run["status"]
    if run.get("kind", "train") != "train":
        raise NotResumable(f"Run {run_id} is a {run['kind']}, not a training run.",
                           "Only training runs have checkpoints to resume.")
    if status in ("queued", "running"):
        raise NotResumable(f"Run {run_id} is {status}: there is nothing to resume yet.",
                           f"Stop it first (POST /api/runs/{run_id}/stop); a graceful stop "
                           "saves a checkpoint.")
    if status == "succeeded":
        raise NotResumable(f"Run {run_id} finished all its steps: there is nothing to resume.",
                           "Start a new run (e.g. with more max_steps) instead.")
    found = last_checkpoint(run["run_dir"])
    if found is None:
        save_steps = (run.get("config") or {}).get("save_steps", 0)
        why = "save_steps was 0 and it did not stop gracefully" if not save_steps else \
            f"it ended before step {save_steps}, its first checkpoint"
        raise NotResumable(
            f"Run {run_id} ({status}) has no checkpoint to resume from ({why}).",
            "Start it again from its config; set save_steps (e.g. 50) so that a run keeps "
            "checkpoints (a graceful stop saves one too).")
    return found


def resume_config(run: dict, overrides: dict | None = None) -> dict:
    """The config of a run that continues `run`: its own config, linked to it, in a new folder
    (output_dir cleared: the old run's adapter stays where it is), with `overrides` applied."""
    config = dict(run["config"])
    old_name = run.get("name") or run["id"]
    config.update(resume_from=run["id"], output_dir="", name=f"{old_name} (resumed)"[:200])
    config.update(overrides or {})
    return config


def mismatched_fields(config: dict, old_config: dict) -> list[dict]:
    """Config problems for each field that differs from the run the checkpoint comes from."""
    problems = []
    for field, value in config.items():
        if field in MAY_DIFFER or field not in old_config or old_config[field] == value:
            continue
        problems.append({"field": field, "message": (
            f"is {value!r} but run {config.get('resume_from')} trained with "
            f"{old_config[field]!r}: a checkpoint continues the same training; set it back, "
            f"or leave resume_from empty for a fresh run")})
    return problems


def plan(registry, config: dict) -> dict:
    """Check that the run `config` resumes exists, can be resumed and matches; return what the
    worker needs (written to the new run's resume.json). Raises NotResumable or ConfigError."""
    old_id = config["resume_from"]
    try:
        old = registry.get(old_id)
    except KeyError:
        raise ConfigError([{"field": "resume_from", "message": (
            f"no run with id {old_id!r}: give the id of a stopped, failed or interrupted run "
            "(GET /api/runs lists them)")}]) from None
    checkpoint, step = check_resumable(old)
    problems = mismatched_fields(config, old["config"])
    if problems:
        raise ConfigError(problems)
    return {"from_run": old_id, "from_run_dir": old["run_dir"], "checkpoint": str(checkpoint),
            "step": step}


def check_plan(registry, cfg) -> dict:
    """`plan` for a config check: every refusal as a ConfigError on resume_from."""
    try:
        return plan(registry, cfg.model_dump(mode="json"))
    except NotResumable as exc:
        raise ConfigError([{"field": "resume_from", "message": f"{exc.message} {exc.hint}"}]) \
            from None


def write_resume_file(run_dir: Path, info: dict) -> None:
    (Path(run_dir) / RESUME_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")


def read_resume_file(run_dir: Path) -> dict:
    """The worker's side: what to resume from. A missing file or checkpoint says so plainly."""
    path = Path(run_dir) / RESUME_FILE
    if not path.is_file():
        raise NotResumable(f"This run resumes another, but {path} is missing.",
                           "Resume the run through the API, the CLI (--resume) or the Runs tab, "
                           "which write it.")
    info = json.loads(path.read_text(encoding="utf-8"))
    if not (Path(info["checkpoint"]) / "trainer_state.json").is_file():
        raise NotResumable(f"The checkpoint {info['checkpoint']} of run {info['from_run']} is "
                           "gone (the run was deleted?).",
                           "Resume from a run that still has its files, or start afresh.")
    return info


def resumed_by(registry, run_id: str) -> list[str]:
    """Ids of the runs that continue `run_id`, newest first."""
    return [r["id"] for r in registry.list(kind="train")
            if (r.get("config") or {}).get("resume_from") == run_id]
