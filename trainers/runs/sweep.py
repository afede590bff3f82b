"""Sweeps: a config with some fields given as lists queues one run per combination.

`learning_rate: [1e-4, 2e-4]` and `lora_r: [8, 16]` make four runs, each named by its values
("sweep learning_rate=0.0001 lora_r=8"), all validated before any is queued. Only a field whose
own type is one value (a number, a choice, a flag, a text) can be an axis: a list given for
`report_to`, `target_modules` or `column_mapping` is that field's value, never a sweep. The
sweep's run ids are kept in DATA_DIR/sweeps/ID.json, so the Runs tab's Compare and
GET /api/sweeps/{id} can show them side by side. No torch here.
"""

from __future__ import annotations

import itertools
import json
import time
import typing
from pathlib import Path
from typing import Literal

from trainers.config import RUN_ID_PATTERN, TrainConfig, build_config
from trainers.errors import ConfigError, ModelForgeError

MAX_SWEEP_RUNS = 32
NOT_SWEPT = ("name", "output_dir", "resume_from")  # each run's own label, folder and origin
SWEEPS_DIR = "sweeps"


def _one_value(annotation) -> bool:
    return annotation in (int, float, bool, str) or typing.get_origin(annotation) is Literal


def sweepable_fields() -> list[str]:
    """The fields a list turns into a sweep axis: those whose type holds one value."""
    return [name for name, info in TrainConfig.model_fields.items()
            if name not in NOT_SWEPT and _one_value(info.annotation)]


def sweep_axes(raw: dict) -> dict[str, list]:
    """{field: values} for each sweepable field given as a list; {} for a plain config."""
    if not isinstance(raw, dict):
        return {}
    swept = set(sweepable_fields())
    return {k: v for k, v in raw.items() if k in swept and isinstance(v, list)}


def _label(values: dict) -> str:
    return " ".join(f"{k}={format(v, 'g') if isinstance(v, float) else v}"
                    for k, v in values.items())


def combinations(raw: dict) -> list[tuple[dict, dict]]:
    """(the axis values, the config dict) of every run of the sweep, named by its values."""
    axes = sweep_axes(raw)
    empty = [k for k, v in axes.items() if not v]
    if empty:
        raise ConfigError([{"field": k, "message": "is an empty list: give one value, or "
                                                   "several to sweep over"} for k in empty])
    count = 1
    for values in axes.values():
        count *= len(values)
    if count > MAX_SWEEP_RUNS:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in axes.items())
        raise ConfigError([{"field": next(iter(axes)), "message": (
            f"the sweep makes {count} runs ({sizes}), more than the {MAX_SWEEP_RUNS} a sweep may "
            f"queue: give fewer values")}])
    base = raw.get("name") or "sweep"
    found = []
    for values in itertools.product(*axes.values()):
        chosen = dict(zip(axes, values))
        found.append((chosen, {**raw, **chosen, "name": f"{base} {_label(chosen)}"}))
    return found


def build_sweep(raw: dict, preset: str | None = None, check=lambda cfg: cfg
                ) -> list[tuple[dict, TrainConfig]]:
    """Validate every run of the sweep (`check` adds the caller's rules, e.g. the server's
    path rules); raise one ConfigError with each problem once, saying which runs have it
    when not all do."""
    runs, problems = [], {}
    combos = combinations(raw)
    for chosen, data in combos:
        try:
            runs.append((chosen, check(build_config(data, preset))))
        except ConfigError as exc:
            for p in exc.problems:
                problems.setdefault((p["field"], p["message"]), []).append(_label(chosen))
    if problems:
        raise ConfigError([{"field": field, "message": message if len(labels) == len(combos)
                            else f"{message} (in the sweep's runs {'; '.join(labels)})"}
                           for (field, message), labels in problems.items()])
    return runs


# --- the record of a sweep ----------------------------------------------------------------

class UnknownSweep(ModelForgeError):
    error_type = "not_found"


def save_sweep(data_dir: str | Path, axes: dict, run_ids: list[str]) -> str:
    """Write DATA_DIR/sweeps/ID.json; return the sweep's id."""
    folder = Path(data_dir) / SWEEPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    from trainers.runs.process import new_run_id

    sweep_id = new_run_id()
    record = {"id": sweep_id, "created_at": time.time(), "axes": axes, "run_ids": run_ids}
    (folder / f"{sweep_id}.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return sweep_id


def read_sweep(data_dir: str | Path, sweep_id: str) -> dict:
    path = Path(data_dir) / SWEEPS_DIR / f"{sweep_id}.json"
    if not RUN_ID_PATTERN.fullmatch(sweep_id) or not path.is_file():
        raise UnknownSweep(f"No sweep with id {sweep_id!r}.", "List the sweeps with "
                                                              "GET /api/sweeps.")
    return json.loads(path.read_text(encoding="utf-8"))


def list_sweeps(data_dir: str | Path) -> list[dict]:
    """Every sweep, newest first."""
    files = sorted((Path(data_dir) / SWEEPS_DIR).glob("*.json"), reverse=True)
    return [json.loads(f.read_text(encoding="utf-8")) for f in files]


def sweep_label(sweep: dict) -> str:
    axes = ", ".join(f"{k} {v}" for k, v in sweep["axes"].items())
    return f"{sweep['id']}: {len(sweep['run_ids'])} runs over {axes}"


def check_machine(runs: list[tuple[dict, TrainConfig]], devices: list[str]) -> None:
    """What this machine cannot run (GPUs, GPU-only settings), for every run before any is
    queued."""
    from trainers.runs.manager import check_fits
    from trainers.runs.preflight import check_gpu_only

    for _, cfg in runs:
        check_fits(cfg, devices)
        check_gpu_only(cfg, devices)


def record_sweep(data_dir: str | Path, runs: list[tuple[dict, TrainConfig]],
                 queued: list[dict]) -> dict:
    """Save the sweep of the queued runs; return its record with the runs."""
    axes = {k: list(dict.fromkeys(chosen[k] for chosen, _ in runs)) for k in runs[0][0]}
    sweep_id = save_sweep(data_dir, axes, [r["id"] for r in queued])
    return {**read_sweep(data_dir, sweep_id), "runs": queued}


def submit_sweep(manager, runs: list[tuple[dict, TrainConfig]], source: str) -> dict:
    """Queue each run of a validated sweep (build_sweep) in the run manager."""
    check_machine(runs, manager.devices)
    queued = [manager.submit(cfg, source=source) for _, cfg in runs]
    return record_sweep(manager.registry.data_dir, runs, queued)
