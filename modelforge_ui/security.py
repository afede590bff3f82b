"""What a request may do: the bearer token, the allowed file roots, trust_remote_code.

Paths from a request are read only under the allowed roots: the upload directory, the data
directory's models/ and outputs/, and the directories the operator names. `../`, symlinks that
lead out and absolute paths elsewhere are refused. Which fields are paths, and of what kind, is
marked in each schema (trainers.config.path_fields): a training config, a benchmark spec, a
preview request. What is stored and run holds the resolved absolute paths. The API and the
dashboard apply the same functions below: check_config_policy, check_spec_policy,
check_preview_policy and check_run_model_policy.
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel

from trainers.benchmark.spec import SAMPLE_DATASET, BenchmarkSpec
from trainers.config import TrainConfig, path_fields
from trainers.data import _looks_like_hub_id as looks_like_hub_dataset
from trainers.errors import ConfigError, ModelForgeError, PathNotAllowedError
from trainers.runs.output_dir import check_output_dir
from trainers.tools.preview import PreviewRequest

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
                         field: str = "path", hint: str | None = None,
                         must_exist: bool = False) -> Path:
    """The real absolute path of `path` if it lies under one of `roots`, else PathRefused.

    Relative paths are taken relative to `base` (the upload directory). Any `..` is refused
    outright, and symlinks are resolved before the check, so a link inside a root that points
    elsewhere is refused too. With `must_exist`, a missing path outside the roots is reported
    as missing (ConfigError), not as outside them: a typo is not a permission problem.
    """
    roots = [Path(r) for r in roots]
    hint = hint or (f"Upload the file with POST /api/datasets, or put it under an allowed root "
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
    if must_exist and not real.exists():
        _check_exists(field, real)
        raise ConfigError([{"field": field, "message": f"{path} does not exist: check the path"}])
    raise PathRefused(field, f"{field} {path!r} is outside the allowed roots.", hint)


def is_local_model_path(name: str, models_dir: Path | None = None) -> bool:
    """A local directory unless `name` has the shape of a hub id (meta-llama/Llama-3.2-3B).

    A hub-shaped name that exists under the models directory is that local copy.
    """
    if not _HUB_ID.match(name):
        return True
    return models_dir is not None and (models_dir / name).is_dir()


# --- the policy, one rule each ----------------------------------------------------------------

def check_trust_remote_code(wanted: bool, settings) -> None:
    """NotPermittedError unless the operator allows running code from model repositories."""
    if wanted and not settings.allow_trust_remote_code:
        raise NotPermittedError(
            "trust_remote_code",
            "trust_remote_code is disabled on this server: it would run Python code shipped "
            "inside the model repository.",
            "Set trust_remote_code to false (use a model that needs no code of its own), or ask "
            "the operator to start the server with --allow-trust-remote-code "
            "(MODELFORGE_ALLOW_TRUST_REMOTE_CODE=1).")


# Where a relative path of each kind is looked for.
_BASES = {"file": "uploads_dir", "model": "models_dir", "dir": "outputs_dir"}


def is_local(kind: str, value: str, settings) -> bool:
    """Whether a path field's value names something on this machine: a data set that is not a
    hub id, a model that is not a hub id (or is one under the models directory), an output."""
    if kind == "file":
        return not looks_like_hub_dataset(value)
    if kind == "model":
        return is_local_model_path(value, settings.models_dir)
    return True


def model_root_hint(settings) -> str:
    """How a local model directory becomes readable: a data set's upload hint does not fit."""
    return (f"Put the model under {settings.models_dir} (where `modelforge demo-model` writes "
            f"by default), or restart the server with --allowed-root DIR (or "
            f"MODELFORGE_ALLOWED_ROOTS) naming the folder that holds it; the allowed roots now: "
            f"{_roots_text(settings.roots())}.")


def allowed_path(kind: str, value: str, field: str, settings) -> Path:
    """The real path of a local path field's value under the allowed roots, else PathRefused."""
    hint = model_root_hint(settings) if kind == "model" else None
    return resolve_allowed_path(value, settings.roots(), getattr(settings, _BASES[kind]), field,
                                hint, must_exist=kind != "dir")  # an output may be new


def _with_allowed_paths(values: BaseModel, settings, skip: Iterable[str] = ()) -> BaseModel:
    """`values` with each local path field (as its schema marks them) resolved. An empty value
    where the schema's default is empty means "not set" (no output_dir, the model's own
    tokenizer); any other empty value is refused as not a usable path."""
    fields = type(values).model_fields
    updates = {}
    for name, kind in path_fields(type(values)).items():
        value = getattr(values, name)
        unset = value == "" == fields[name].default
        if name not in skip and not unset and is_local(kind, value, settings):
            updates[name] = str(allowed_path(kind, value, name, settings))
    return values.model_copy(update=updates)


# --- each kind of request ------------------------------------------------------------------------

_MISSING = {
    "dataset": (Path.is_file, "file {path} does not exist: upload it with POST /api/datasets or "
                              "check the path"),
    "model_name": (Path.is_dir, "local model directory {path} does not exist: give a hub id such "
                                "as meta-llama/Llama-3.2-3B or an existing directory"),
}


def check_config_policy(cfg: TrainConfig, settings) -> TrainConfig:
    """A valid training config under the server's rules, with resolved absolute paths.

    Raises NotPermittedError / PathRefused (403) or ConfigError (422: a missing file, an
    output_dir the registry would refuse).
    """
    check_trust_remote_code(cfg.trust_remote_code, settings)
    resolved = _with_allowed_paths(cfg, settings)
    kinds = path_fields(TrainConfig)
    for field in _MISSING:  # both required: never unset
        if is_local(kinds[field], getattr(cfg, field), settings):
            _check_exists(field, Path(getattr(resolved, field)))
    if resolved.output_dir:
        # new or empty, outside models and runs: the same rule the registry applies at submit
        check_output_dir(resolved.output_dir, settings.data_dir / "runs", resolved.model_name)
        roots = {os.path.realpath(root) for root in settings.roots()}
        if resolved.output_dir in roots:  # "." or a root's own path: its runs would share it
            raise ConfigError([{"field": "output_dir", "message":
                                f"{resolved.output_dir} is an allowed root itself: give a new "
                                "folder inside it, e.g. my-run (under "
                                f"{settings.outputs_dir}), or leave output_dir empty"}])
    return resolved


def _check_exists(field: str, path: Path) -> None:
    """ConfigError when a required file or model directory is missing."""
    if field in _MISSING and not _MISSING[field][0](path):
        raise ConfigError([{"field": field, "message": _MISSING[field][1].format(path=path)}])


def with_path_problems(exc: ConfigError, data: object, settings) -> ConfigError:
    """`exc` with the path problems of the config dict `data` that did not validate added, so
    one check reports every problem (a misspelled data path beside a bad number)."""
    if not isinstance(data, dict):
        return exc
    reported = {p["field"] for p in exc.problems}
    problems = list(exc.problems)
    for name, kind in path_fields(TrainConfig).items():
        value = data.get(name)
        if name in reported or not isinstance(value, str) or not value \
                or not is_local(kind, value, settings):
            continue
        try:
            _check_exists(name, allowed_path(kind, value, name, settings))
        except (PathRefused, ConfigError) as path_exc:
            problems += path_exc.to_dict()["problems"]
    return ConfigError(problems)


def check_spec_policy(spec: BenchmarkSpec, settings) -> BenchmarkSpec:
    """A benchmark spec with its local paths resolved; the bundled sample data set and the
    architecture name of synthetic weights are not paths."""
    skip = {"dataset"} if spec.dataset == SAMPLE_DATASET else set()
    skip |= {"model"} if spec.synthetic_weights else set()
    return _with_allowed_paths(spec, settings, skip)


def check_preview_policy(request: PreviewRequest, settings) -> PreviewRequest:
    """A PreviewRequest (trainers.tools.preview) with its data set and model resolved."""
    check_trust_remote_code(request.trust_remote_code, settings)
    return _with_allowed_paths(request, settings)


def check_run_model_policy(config: dict, settings) -> None:
    """Loading a recorded run's model again (playground, export) obeys today's rules: a run
    recorded by `modelforge train`, or under an earlier setting, may ask for more."""
    check_trust_remote_code(bool(config.get("trust_remote_code")), settings)
    model = str(config.get("model_name", ""))
    kind = path_fields(TrainConfig)["model_name"]
    if is_local(kind, model, settings):
        allowed_path(kind, model, "model_name", settings)
