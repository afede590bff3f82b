"""Where a run may save its adapter: an output_dir that no other run and no model owns.

A run writes to its own run directory and to its output_dir, nowhere else. So an output_dir
must be new or empty; not inside a model folder (the next run on that model would load the
adapter files as part of it) or a run directory; and not the same as, inside or around the
output_dir of a queued or running run (that run has not written it yet, so it is still empty).
RunRegistry.create checks it before a run is recorded, which is before it is queued, so the API,
the dashboard and `modelforge train` refuse the same folders with the same words.
"""

from __future__ import annotations

from pathlib import Path

from trainers.errors import ConfigError

# Files that make a folder a model or an adapter (a config.json alone may be a training config).
MODEL_FILES = ("adapter_config.json", "*.safetensors", "pytorch_model*.bin", "*.gguf",
               "model.safetensors.index.json")


def is_model_folder(folder: Path) -> bool:
    return any(next(folder.glob(pattern), None) is not None for pattern in MODEL_FILES)


def _refuse(message: str) -> ConfigError:
    return ConfigError([{"field": "output_dir", "message": message}])


def check_output_dir(output_dir: str, runs_dir: Path, model_name: str = "") -> Path:
    """The resolved output_dir, or ConfigError naming output_dir and the fix. The claims of
    other runs are checked separately (check_unclaimed), inside the registry's transaction."""
    if not Path(output_dir).expanduser().is_absolute():
        raise _refuse(f"{output_dir} is not an absolute path: give the full path of a new "
                      "folder, or leave output_dir empty to save in the run's own directory")
    try:
        return _check_folder(Path(output_dir).expanduser().resolve(), Path(runs_dir).resolve(),
                             model_name)
    except OSError as exc:  # a name too long, a folder that cannot be read
        raise _refuse(f"{output_dir[:200]} cannot be used ({exc.strerror}): choose another "
                      "folder") from None


def _check_folder(path: Path, runs_dir: Path, model_name: str) -> Path:
    fix = "choose a new folder, or leave output_dir empty to save in the run's own directory"
    if path == runs_dir or runs_dir in path.parents:
        raise _refuse(f"{path} is inside ModelForge's run directories ({runs_dir}), which "
                      f"belong to their runs: {fix}")
    model = Path(model_name).expanduser().resolve() if model_name and \
        Path(model_name).expanduser().is_dir() else None
    for folder in (path, *path.parents):
        if folder == model or (folder.is_dir() and is_model_folder(folder)):
            where = "is" if folder == path else "is inside"
            raise _refuse(f"{path} {where} the model or adapter folder {folder}: files saved "
                          f"there would become part of it; {fix}")
    if path.is_file():
        raise _refuse(f"{path} is a file: {fix}")
    if path.is_dir() and next(path.iterdir(), None) is not None:
        raise _refuse(f"{path} is not empty, and a run would overwrite what is there: {fix}")
    return path


def check_unclaimed(path: Path, claims: dict[str, str]) -> None:
    """`claims`: run id -> output_dir of each queued or running run."""
    for run_id, other in claims.items():
        other_path = Path(other).expanduser().resolve()
        if path == other_path or other_path in path.parents or path in other_path.parents:
            raise _refuse(f"{path} is claimed by run {run_id}, which is queued or running and "
                          f"saves its adapter in {other_path}: choose another folder, or wait "
                          "until that run has ended")
