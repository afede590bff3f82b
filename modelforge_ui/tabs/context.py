"""What every tab shares: the run manager, the server settings, and small helpers.

State lives here and in the run registry, never in the UI: each handler reads what it needs.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import gradio as gr

from modelforge_ui.form import problems_markdown
from modelforge_ui.security import check_run_model_policy
from trainers.errors import ModelForgeError

READ_ONLY_NOTE = ("This server runs in **read-only demo mode**: you can look around, validate "
                  "configs and read past runs, but not start, stop, rename, delete or export. "
                  "The operator enables it by setting MODELFORGE_TOKEN.")


class Dashboard:
    def __init__(self, manager, settings):
        self.manager = manager
        self.settings = settings

    @property
    def read_only(self) -> bool:
        return bool(getattr(self.settings, "read_only", False))

    def require_writable(self, action: str) -> None:
        """Raise (shown as an error toast) when the server is read-only."""
        if self.read_only:
            raise gr.Error(f"Cannot {action}: this server is in read-only demo mode. "
                           "Fix: the operator sets MODELFORGE_TOKEN and restarts it.")

    def require_model_policy(self, run: dict) -> None:
        """Loading a run's model again (playground, export): security.check_run_model_policy,
        its refusal shown as an error toast."""
        try:
            check_run_model_policy(run["config"], self.settings)
        except ModelForgeError as exc:
            raise gr.Error(f"{exc.message} Fix: {exc.hint}") from None

    # -- runs ------------------------------------------------------------------------------
    def runs(self, kind: str | None = None) -> list[dict]:
        return self.manager.registry.list(kind=kind)

    def active_run_id(self) -> str | None:
        """The training job that is running, else the oldest queued one; None when idle."""
        train = self.runs(kind="train")
        for status in ("running", "queued"):
            found = [r["id"] for r in train if r["status"] == status]
            if found:
                return found[-1]  # list is newest first: the oldest active one
        return None

    def get_run(self, run_id: str | None) -> dict | None:
        if not run_id:
            return None
        try:
            return self.manager.get(run_id)
        except KeyError:
            return None


def error_markdown(exc: ModelForgeError) -> str:
    """A typed error as the form shows it: each problem with its fix, or message and fix."""
    data = exc.to_dict()
    if data.get("problems"):
        text = problems_markdown(data["problems"])
        return text + (f"\n\nFix: {exc.hint}" if exc.hint else "")
    return f"**{exc.message}**" + (f"\n\nFix: {exc.hint}" if exc.hint else "")


def run_label(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)


ZIP_PREFIX = "modelforge-zip-"
# Gradio copies a returned file into its own cache as the event completes; ours is removed this
# long after it was made (adapters can be hundreds of MB; /tmp is not cleaned for us).
ZIP_KEEP_S = 60.0


def _remove_later(folder: Path, keep_s: float) -> None:
    import shutil
    import threading

    timer = threading.Timer(keep_s, shutil.rmtree, (folder,), {"ignore_errors": True})
    timer.daemon = True
    timer.start()


def make_zip(name: str, files: dict[str, Path | str | dict | list],
             keep_s: float = ZIP_KEEP_S) -> Path:
    """A zip in a fresh temporary directory, removed `keep_s` seconds later (Gradio serves
    its copy).

    Each value is a file, a directory (added recursively), text, or JSON-able data.
    """
    out = Path(tempfile.mkdtemp(prefix=ZIP_PREFIX)) / f"{name}.zip"
    _remove_later(out.parent, keep_s)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, value in files.items():
            if isinstance(value, Path):
                if value.is_symlink():  # a link may point anywhere on the host (as the API's zip)
                    continue
                if value.is_dir():
                    for path in _plain_files(value):
                        zf.write(path, f"{arcname}/{path.relative_to(value)}")
                elif value.is_file():
                    zf.write(value, arcname)
            elif isinstance(value, str):
                zf.writestr(arcname, value)
            else:
                zf.writestr(arcname, json.dumps(value, indent=2, default=str))
    return out


def _plain_files(folder: Path) -> list[Path]:
    """The regular files under `folder`, never reached through a symlink."""
    found = []
    for root, _, files in os.walk(folder):  # followlinks=False: linked folders stay closed
        found += [Path(root) / name for name in files if not (Path(root) / name).is_symlink()]
    return sorted(found)
