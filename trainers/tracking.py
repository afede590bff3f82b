"""Experiment trackers (`report_to`): which package each needs, and how a worker sets it up so
that one needing a network or an account never hangs a run that has neither.

The trackers are transformers' own integrations (TensorBoardCallback, WandbCallback,
MLflowCallback, TrackioCallback); ModelForge only checks the package before the run is queued,
points the logs into the run directory and chooses offline modes. No torch here: the config
check imports this (find_spec looks a package up without importing it).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

TENSORBOARD_DIR = "tensorboard"  # RUN_DIR/tensorboard holds the event files

# tracker -> (modules any of which is enough, the pip command that installs it)
TRACKERS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "wandb": (("wandb",), "pip install wandb"),
    "mlflow": (("mlflow",), "pip install mlflow"),
    "trackio": (("trackio",), "pip install trackio"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def tracker_list(value: object) -> object:
    """`report_to` as transformers takes it ("none", one name, or a list of names) -> the list
    of trackers, each once ("none" alone is none). Anything else is returned as it is, for the
    schema to refuse with its own message."""
    if value is None or value == "none":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        names = [v for v in value if v != "none"]
        return list(dict.fromkeys(names)) if all(isinstance(v, str) for v in names) else value
    return value


def tracker_problems(report_to: list[str]) -> list[dict]:
    """A config problem for each tracker whose package is not installed on this machine."""
    problems = []
    for tracker in report_to:
        modules, install = TRACKERS[tracker]
        if not any(_installed(m) for m in modules):
            problems.append({"field": "report_to", "message": (
                f"{tracker} is not installed on this machine: install it with `{install}` (in "
                f"the environment the server and its workers run in), or remove it from "
                f"report_to (\"none\" for no tracker)")})
    return problems


def tensorboard_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / TENSORBOARD_DIR


def use_stage_logs(report_to: list[str], run_dir: Path, stage: str) -> None:
    """Give one stage of a strategy with several trainers (rlhf) its own TensorBoard folder,
    RUN_DIR/tensorboard/STAGE: each trainer counts steps from 1, so in one folder the stages'
    curves would lie on top of each other. Call before the stage's trainer is built (its
    TensorBoardCallback reads the folder then)."""
    if "tensorboard" in report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_dir(run_dir) / stage)


def _has_wandb_login() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def setup_tracking(report_to: list[str], run_dir: Path, run_name: str) -> list[dict]:
    """Set the environment each tracker reads (in the worker, before the trainer is built) and
    return what was decided, one dict per tracker for the run's events: {"tracker", "logs",
    "mode", "message"}."""
    return [_setup_tracker(tracker, Path(run_dir), run_name) for tracker in report_to]


def _setup_tracker(tracker: str, run_dir: Path, run_name: str) -> dict:
    if tracker == "tensorboard":
        logs = tensorboard_dir(run_dir)
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(logs)
        return {"tracker": "tensorboard", "logs": str(logs), "mode": "local",
                "message": f"TensorBoard event files in {logs}: tensorboard --logdir {logs}"}
    if tracker == "wandb":
        os.environ.setdefault("WANDB_DIR", str(run_dir))
        os.environ.setdefault("WANDB_NAME", run_name)
        if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
            mode, why = os.environ["WANDB_MODE"], "WANDB_MODE is set"
        elif _has_wandb_login():
            mode, why = os.environ.get("WANDB_MODE", "online"), "a W&B login is configured"
        else:
            os.environ["WANDB_MODE"] = "offline"
            mode, why = "offline", "no WANDB_API_KEY or wandb login is configured"
        message = f"W&B {mode} ({why}); its files in {run_dir / 'wandb'}"
        if mode == "offline":
            message += f"; upload later with `wandb sync {run_dir / 'wandb'}`"
        return {"tracker": "wandb", "logs": str(run_dir / "wandb"), "mode": mode,
                "message": message}
    if tracker == "mlflow":
        uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        if not uri:
            uri = (run_dir / "mlruns").as_uri()
            os.environ["MLFLOW_TRACKING_URI"] = uri
        remote = uri.startswith(("http://", "https://", "databricks"))
        if remote:  # an unreachable server fails in seconds, not after minutes of retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_RUN_NAME", run_name)
        return {"tracker": "mlflow", "logs": uri, "mode": "remote" if remote else "local",
                "message": f"MLflow tracking at {uri}" + (
                    " (a remote server: without a network the run fails within seconds "
                    "instead of hanging)" if remote else " (local files; no server needed)")}
    if tracker == "trackio":
        os.environ.setdefault("TRACKIO_DIR", str(run_dir / "trackio"))
        space = os.environ.get("TRACKIO_SPACE_ID")
        return {"tracker": "trackio", "logs": os.environ["TRACKIO_DIR"],
                "mode": "hub" if space else "local",
                "message": (f"Trackio syncing to the Space {space} (needs a network and "
                            "HF_TOKEN)" if space else
                            f"Trackio local database in {os.environ['TRACKIO_DIR']}; view it "
                            f"with `TRACKIO_DIR={os.environ['TRACKIO_DIR']} trackio show`")}
    raise ValueError(f"unknown tracker {tracker!r}")  # the schema allows only TRACKERS
