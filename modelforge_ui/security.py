"""What a request may do: the bearer token, the allowed file roots, trust_remote_code.

Paths from a request (dataset, a local model_name, output_dir, a preview's file) are read only
under the allowed roots: the upload directory, the data directory's models/ and outputs/, and
the directories the operator names. `../`, symlinks that lead out and absolute paths elsewhere
are refused. The config that is stored and run holds the resolved absolute paths.
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path
from typing import Iterable

from trainers.config import TrainConfig
from trainers.data import _looks_like_hub_id as looks_like_hub_dataset
from trainers.errors import ConfigError, ModelForgeError, PathNotAllowedError
from trainers.runs.output_dir import check_output_dir

# A Hugging Face hub id: "name" or "owner/name" with letters, digits, '-', '_', '.' (the hub
# allows 96 characters a part).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")
# Longer paths make the file system fail (ENAMETOOLONG) instead of answering.
PATH_MAX, NAME_MAX = 4096, 255


class PathRefused(PathNotAllowedError):
    """A path outside the allowed roots; names the config field (HTTP 403)."""

    def __init__(self, field: str, message: str, hint: str):
        super().__init__(message, hint)
        self.field = field

    def to_dict(self) -> dict:
        return {**super().to_dict(), "problems": [{"field": self.field, "message": self.message}]}


class NotPermittedError(ModelForgeError):
    """The operator has not enabled this (HTTP 403)."""

    error_type = "not_permitted"

    def __init__(self, field: str, message: str, hint: str):
        super().__init__(message, hint)
        self.field = field

    def to_dict(self) -> dict:
        return {**super().to_dict(), "problems": [{"field": self.field, "message": self.message}]}


# --- the token ---------------------------------------------------------------------------------

def token_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; no expected token means the server is open (loopback only)."""
    if not expected:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


# --- paths -------------------------------------------------------------------------------------

def _roots_text(roots: Iterable[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def resolve_allowed_path(path: str, roots: Iterable[Path], base: Path | None = None,
                         field: str = "path") -> Path:
    """The real absolute path of `path` if it lies under one of `roots`, else PathRefused.

    Relative paths are taken relative to `base` (the upload directory). Any `..` is refused
    outright, and symlinks are resolved before the check, so a link inside a root that points
    elsewhere is refused too.
    """
    roots = [Path(r) for r in roots]
    hint = (f"Upload the file with POST /api/datasets, or put it under an allowed root "
            f"({_roots_text(roots)}); the operator can add one with --allowed-root or "
            "MODELFORGE_ALLOWED_ROOTS.")
    if not path or "\x00" in path:
        raise PathRefused(field, f"{field} is not a usable path.", hint)
    raw = Path(path)
    candidate = raw if raw.is_absolute() else (base or roots[0]) / raw
    encoded = str(candidate).encode(errors="surrogateescape")
    if len(encoded) > PATH_MAX or max(map(len, encoded.split(b"/"))) > NAME_MAX:
        raise PathRefused(field, f"{field} is too long ({len(path)} characters): a path may "
                                 f"have {PATH_MAX} bytes, and each of its parts {NAME_MAX}.",
                          "Give a shorter path. " + hint)
    if ".." in re.split(r"[\\/]", path):
        raise PathRefused(field, f"{field} {path!r} contains '..', which is not allowed.", hint)
    if path.startswith("~"):
        raise PathRefused(field, f"{field} {path!r} starts with '~'; give an absolute path.", hint)
    real = Path(os.path.realpath(candidate))
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    if any(real == r or real.is_relative_to(r) for r in real_roots):
        return real
    lexical = Path(os.path.normpath(candidate))
    if any(lexical.is_relative_to(r) or lexical.is_relative_to(Path(os.path.normpath(r)))
           for r in roots + real_roots):
        raise PathRefused(field, f"{field} {path!r} is a symlink (or lies under one) that "
                                 f"points outside the allowed roots, to {real}.", hint)
    raise PathRefused(field, f"{field} {path!r} is outside the allowed roots.", hint)


def is_local_model_path(name: str, models_dir: Path | None = None) -> bool:
    """A local directory unless `name` has the shape of a hub id (meta-llama/Llama-3.2-3B).

    A hub-shaped name that exists under the models directory is that local copy.
    """
    if not _HUB_ID.match(name):
        return True
    return models_dir is not None and (models_dir / name).is_dir()


# --- a whole config ----------------------------------------------------------------------------

def check_config_policy(cfg: TrainConfig, settings) -> TrainConfig:
    """Apply the server's rules to a valid config; return it with resolved absolute paths.

    Raises NotPermittedError / PathRefused (403) or ConfigError (422, a missing file).
    """
    if cfg.trust_remote_code and not settings.allow_trust_remote_code:
        raise NotPermittedError(
            "trust_remote_code",
            "trust_remote_code is disabled on this server: it would run Python code shipped "
            "inside the model repository.",
            "Set trust_remote_code to false, or ask the operator to start the server with "
            "--allow-trust-remote-code (MODELFORGE_ALLOW_TRUST_REMOTE_CODE=1).")
    roots, base = settings.roots(), settings.uploads_dir
    updates: dict = {}
    if not looks_like_hub_dataset(cfg.dataset):
        dataset = resolve_allowed_path(cfg.dataset, roots, base, "dataset")
        if not dataset.is_file():
            raise ConfigError([{"field": "dataset", "message":
                                f"file {dataset} does not exist: upload it with POST "
                                "/api/datasets or check the path"}])
        updates["dataset"] = str(dataset)
    if is_local_model_path(cfg.model_name, settings.models_dir):
        model = resolve_allowed_path(cfg.model_name, roots, settings.models_dir, "model_name")
        if not model.is_dir():
            raise ConfigError([{"field": "model_name", "message":
                                f"local model directory {model} does not exist: give a hub id "
                                "such as meta-llama/Llama-3.2-3B or an existing directory"}])
        updates["model_name"] = str(model)
    if cfg.output_dir:
        output_dir = resolve_allowed_path(cfg.output_dir, roots, settings.outputs_dir,
                                          "output_dir")
        # new or empty, outside models and runs: the same rule the registry applies at submit
        check_output_dir(str(output_dir), settings.data_dir / "runs",
                         updates.get("model_name", cfg.model_name))
        updates["output_dir"] = str(output_dir)
    return cfg.model_copy(update=updates)
