"""/api/start_training, /api/config/check and /api/runs/...: queue, follow, stop, rename,
delete a run; its events, log and adapter."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ConfigDict, Field
from starlette.background import BackgroundTask

from modelforge_ui.api.busy import BusyLimits
from modelforge_ui.api.errors import ApiError, not_found
from modelforge_ui.security import (NotPermittedError, PathRefused, check_config_policy,
                                    with_path_problems)
from modelforge_ui.settings import Settings
from trainers.config import PRESETS, TextFields, TrainConfig, build_config, preset_note
from trainers.errors import ConfigError
from trainers.runs.jobs import adapter_dir
from trainers.runs.manager import RunManager
from trainers.runs.preflight import preflight_problems
from trainers.runs.registry import STATUSES
from trainers.runs.sweep import (build_sweep, check_machine, list_sweeps, read_sweep,
                                 submit_sweep, sweep_axes)

EVENTS_PAGE = 1000


class RenameRequest(TextFields):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="The run's new label.")


def _json_body_doc(schema: dict, example: dict | None = None) -> dict:
    """OpenAPI text for an endpoint that parses its JSON body itself."""
    content = {"schema": schema}
    if example:
        content["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": content}}}


def _parse_json(raw: bytes) -> object:
    if not raw.strip():
        raise ApiError(422, "config", "The request body is empty.",
                       "Send the config as a JSON object, with Content-Type: application/json.",
                       [{"field": "config", "message": "is empty: send a JSON object"}])

    def no_constants(name: str):
        raise ValueError(f"{name} is not a valid JSON number")

    try:
        return json.loads(raw, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"Malformed JSON: {exc.msg} at line {exc.lineno}, "
                                        f"column {exc.colno}.",
                       "Send one valid JSON object, e.g. {\"model_name\": ..., \"dataset\": ...}.")
    except (ValueError, RecursionError) as exc:  # bad UTF-8, NaN/Infinity, absurd nesting
        raise ApiError(400, "bad_json", f"Malformed JSON: {str(exc)[:200]}.",
                       "Send one valid UTF-8 JSON object.")


def _validated_config(raw: bytes, preset: str | None, settings: Settings) -> TrainConfig:
    data = _parse_json(raw)
    try:
        cfg = build_config(data, preset)  # a non-object gets build_config's message
    except ConfigError as exc:
        raise with_path_problems(exc, data, settings) from None
    return check_config_policy(cfg, settings)


def _preset_notes(raw: bytes, preset: str | None) -> list[str]:
    """What a valid config overrides of the preset (the body parsed already)."""
    note = preset_note(json.loads(raw), preset) if preset else ""
    return [note] if note else []


def add_run_routes(router: APIRouter, manager: RunManager, settings: Settings,
                   busy: BusyLimits) -> None:
    config_doc = _json_body_doc(TrainConfig.model_json_schema(), {
        "provider": "huggingface", "model_name": "meta-llama/Llama-3.2-3B",
        "max_seq_length": 2048, "task": "text-generation", "strategy": "sft",
        "dataset": "my_data.jsonl", "num_train_epochs": 3})

    @router.post("/start_training", status_code=202, tags=["runs"], openapi_extra=config_doc)
    async def start_training(request: Request, preset: str | None = Query(
            None, description=f"Start from a preset: {', '.join(PRESETS)}.")) -> JSONResponse:
        """Queue a training run. Returns 202 with the run id at once; the run starts when a
        device is free. Invalid configs get 422 with one message per field. A config with
        fields given as lists (e.g. "learning_rate": [1e-4, 2e-4]) is a sweep: one run per
        combination, at most 32; the answer lists their ids (trainers/runs/sweep.py)."""
        raw = await request.body()
        data = _parse_json(raw)
        if sweep_axes(data):
            return await run_in_threadpool(_start_sweep, manager, settings, data, preset)

        def submit() -> dict:
            return manager.submit(_validated_config(raw, preset, settings), source="api")

        run = await run_in_threadpool(submit)
        return JSONResponse(
            {"run_id": run["id"], "status": run["status"], "name": run["name"],
             "queue_position": manager.queue_position(run["id"]),
             "notes": _preset_notes(raw, preset)},
            status_code=202, headers={"Location": f"/api/runs/{run['id']}"})

    @router.post("/config/check", tags=["runs"], openapi_extra=config_doc)
    async def check_config(request: Request, preset: str | None = None) -> dict:
        """Validate a config (and the server's path rules) without starting anything. A sweep
        is checked whole: `"sweep"` lists the names of the runs it would queue."""
        raw = await request.body()
        data = _parse_json(raw)
        if sweep_axes(data):
            return await run_in_threadpool(_check_sweep, manager, settings, data, preset)
        try:
            cfg = await run_in_threadpool(_validated_config, raw, preset, settings)
            if cfg.resume_from:  # what submitting would refuse: trainers/runs/resume.py
                from trainers.runs.resume import check_plan

                await run_in_threadpool(check_plan, manager.registry, cfg)
        except (ConfigError, PathRefused, NotPermittedError) as exc:
            return {"ok": False, "problems": exc.to_dict().get("problems", [])}
        # what Start would refuse, or the worker fail on: GPU-only settings, unreadable data
        with busy.slot("check"):
            late = await run_in_threadpool(preflight_problems, cfg, manager.devices)
        if late:
            return {"ok": False, "problems": late, "notes": _preset_notes(raw, preset)}
        return {"ok": True, "problems": [], "config": cfg.model_dump(mode="json"),
                "notes": _preset_notes(raw, preset)}

    @router.get("/sweeps", tags=["runs"])
    def sweeps() -> dict:
        """Sweeps, newest first: each one's axes and run ids."""
        return {"sweeps": list_sweeps(manager.registry.data_dir)}

    @router.get("/sweeps/{sweep_id}", tags=["runs"])
    def sweep_detail(sweep_id: str) -> dict:
        """A sweep's axes and its runs (their records, as GET /api/runs/{id} gives them)."""
        sweep = read_sweep(manager.registry.data_dir, sweep_id)
        runs = []
        for run_id in sweep["run_ids"]:
            try:
                runs.append(manager.get(run_id))
            except KeyError:  # deleted since
                continue
        return {**sweep, "runs": runs, "compare": "/api/compare?ids=" + ",".join(
            r["id"] for r in runs)}

    @router.get("/runs", tags=["runs"])
    def list_runs(status: str | None = None, kind: str | None = None,
                  limit: int = Query(100, ge=1, le=1000)) -> dict:
        """Runs, newest first."""
        statuses = tuple(s.strip() for s in status.split(",")) if status else ()
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise ApiError(422, "invalid_request", f"Unknown status {unknown}.",
                           f"Use any of {', '.join(STATUSES)}, comma-separated.",
                           [{"field": "status", "message": f"allowed values are {STATUSES}"}])
        found = manager.registry.list(kind=kind, statuses=statuses)
        for run in found[:limit]:
            run["queue_position"] = manager.queue_position(run["id"])
        return {"runs": found[:limit], "total": len(found)}

    def get_run(run_id: str) -> dict:
        try:
            return manager.get(run_id)
        except KeyError:
            raise not_found(run_id) from None

    @router.get("/runs/{run_id}", tags=["runs"])
    def run_detail(run_id: str) -> dict:
        """Status, config, latest progress, summary (metrics, or the error and its fix)."""
        return get_run(run_id)

    @router.get("/runs/{run_id}/events", tags=["runs"])
    def run_events(run_id: str, after: int = Query(0, ge=0),
                   limit: int = Query(EVENTS_PAGE, ge=1, le=EVENTS_PAGE)) -> dict:
        """Events with seq >= after. Poll with after = the returned next_after."""
        try:
            return events_page(manager, run_id, after, limit)
        except KeyError:
            raise not_found(run_id) from None

    @router.post("/runs/{run_id}/stop", status_code=202, tags=["runs"])
    def stop_run(run_id: str) -> dict:
        """Queued: removed from the queue. Running: stops at the next step and saves the
        adapter; forced after the grace time."""
        get_run(run_id)
        return manager.stop(run_id)

    @router.patch("/runs/{run_id}", tags=["runs"])
    def rename_run(run_id: str, body: RenameRequest) -> dict:
        """Rename a run."""
        try:
            return manager.rename(run_id, body.name)
        except KeyError:  # never there, or deleted meanwhile
            raise not_found(run_id) from None

    @router.delete("/runs/{run_id}", tags=["runs"])
    def delete_run(run_id: str) -> dict:
        """Delete a finished run's record and its run directory (adapter included). A custom
        output_dir outside the run directory is left alone."""
        try:
            manager.delete(run_id)
        except KeyError:  # never there, or deleted meanwhile
            raise not_found(run_id) from None
        except ValueError as exc:  # RunInUse names the run to stop
            blocking = getattr(exc, "blocking", run_id)
            raise ApiError(409, "conflict", f"{exc}.",
                           f"POST /api/runs/{blocking}/stop first.") from None
        return {"deleted": run_id}

    @router.get("/runs/{run_id}/log", tags=["runs"], response_class=PlainTextResponse)
    def run_log(run_id: str, tail_bytes: int = Query(20000, ge=1, le=2**22)) -> str:
        """The end of the worker's train.log (stdout and stderr)."""
        from trainers.runs.process import log_tail

        return log_tail(Path(get_run(run_id)["run_dir"]), tail_bytes)

    def adapter_zip(run_id: str):
        run = get_run(run_id)
        adapter_dir(run)  # 409 while active, 404 without an adapter
        from trainers.tools.model_card import hf_adapter_files  # the folder with its model card

        return run, _zip_files(hf_adapter_files(run["run_dir"], run["name"]))

    @router.get("/runs/{run_id}/adapter", tags=["runs"], response_class=StreamingResponse,
                responses={200: {"content": {"application/zip": {}}}})
    async def download_adapter(run_id: str) -> StreamingResponse:
        """The trained LoRA adapter (and tokenizer files) as a zip: 409 while the run is
        queued or running, 404 when it saved none."""
        with busy.slot("zip"):  # past the limit: refused here, without a pool thread
            run, zipped = await run_in_threadpool(adapter_zip, run_id)
        size = zipped.seek(0, os.SEEK_END)
        zipped.seek(0)
        return StreamingResponse(
            _chunks(zipped), media_type="application/zip", background=BackgroundTask(zipped.close),
            headers={"Content-Length": str(size), "Content-Disposition":
                     f'attachment; filename="{run["id"]}-adapter.zip"'})


def _start_sweep(manager: RunManager, settings: Settings, data: dict,
                 preset: str | None) -> JSONResponse:
    runs = build_sweep(data, preset, lambda cfg: check_config_policy(cfg, settings))
    sweep = submit_sweep(manager, runs, source="api")
    ids = ",".join(sweep["run_ids"])
    return JSONResponse(
        {"sweep_id": sweep["id"], "axes": sweep["axes"], "run_ids": sweep["run_ids"],
         "runs": [{"run_id": r["id"], "name": r["name"], "status": r["status"]}
                  for r in sweep["runs"]],
         "compare": f"/api/compare?ids={ids}"},
        status_code=202, headers={"Location": f"/api/sweeps/{sweep['id']}"})


def _check_sweep(manager: RunManager, settings: Settings, data: dict,
                 preset: str | None) -> dict:
    """What POST /api/start_training would refuse of a sweep, and what its first run's worker
    would fail on (the data; the runs share it unless the data set is an axis)."""
    try:
        runs = build_sweep(data, preset, lambda cfg: check_config_policy(cfg, settings))
        check_machine(runs, manager.devices)
    except (ConfigError, PathRefused, NotPermittedError) as exc:
        return {"ok": False, "problems": exc.to_dict().get("problems", [])}
    late = preflight_problems(runs[0][1], manager.devices)
    return {"ok": not late, "problems": late, "sweep": [cfg.name for _, cfg in runs]}


def events_page(manager: RunManager, run_id: str, after: int, limit: int) -> dict:
    """A job's events from seq `after`, its status, and where the next poll starts."""
    events = manager.events(run_id, after, limit)
    status = manager.registry.get(run_id)["status"]
    next_after = events[-1]["seq"] + 1 if events else after
    return {"run_id": run_id, "status": status, "events": events, "next_after": next_after}


def _zip_files(files: dict):
    """A zip of {name: file path or text} (trainers.tools.model_card.hf_adapter_files) in a
    temporary file without a name: its disk space comes back when it is closed, however the
    request ends, and no folder is left behind."""
    fh = tempfile.TemporaryFile(prefix="modelforge-adapter-", suffix=".zip")
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, value in files.items():
            if isinstance(value, Path):
                zf.write(value, name)
            else:
                zf.writestr(name, value)
    return fh


def _chunks(fh, size: int = 1 << 20):
    with fh:
        while chunk := fh.read(size):
            yield chunk
