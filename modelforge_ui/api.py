"""The REST API under /api: start and follow runs, upload and preview data sets, health, doctor.

Every error is JSON {"error_type", "message", "hint"} (plus "problems": [{"field", "message"}]
for field-level errors), with the same texts the CLI prints. Bad input gets a 4xx, never a 500.
Handlers that touch files or SQLite are plain `def`s, so FastAPI runs them in its thread pool
and the event loop (and /api/health) never waits on them. No torch is imported here: previews
that need a tokenizer and the doctor's torch probe run in subprocesses.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelforge_ui.security import (NotPermittedError, PathRefused, check_config_policy,
                                    is_local_model_path, looks_like_hub_dataset,
                                    resolve_allowed_path)
from modelforge_ui.settings import Settings
from trainers.config import PRESETS, TrainConfig, build_config, plain_problem
from trainers.data import EXTENSIONS
from trainers.errors import ConfigError, ModelForgeError
from trainers.runs.registry import STATUSES
from trainers.runs.manager import RunManager

MAX_JSON_BYTES = 1 * 2**20  # a config is a few KiB; anything near this is not a config
MULTIPART_OVERHEAD = 64 * 2**10
UPLOAD_PATH = "/api/datasets"  # the one /api endpoint whose body is multipart, not JSON
MAX_NAME = 200  # of a stored upload: file systems take 255 bytes; room for the "-N" of a repeat
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
EVENTS_PAGE = 1000
DOCTOR_CACHE_S = 300


class ApiError(Exception):
    """An error response: status, a stable error_type, a plain message and the fix."""

    def __init__(self, status: int, error_type: str, message: str, hint: str = "",
                 problems: list[dict] | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.error_type, self.message, self.hint = status, error_type, message, hint
        self.problems, self.headers = problems, headers

    def body(self) -> dict:
        body = {"error_type": self.error_type, "message": self.message, "hint": self.hint}
        if self.problems is not None:
            body["problems"] = self.problems
        return body


def _not_found(run_id: str) -> ApiError:
    return ApiError(404, "not_found", f"No run with id {run_id!r}.",
                    "List the runs with GET /api/runs.")


def _no_endpoint(method: str, path: str) -> ApiError:
    return ApiError(404, "not_found", f"No such endpoint: {method} {path[:200]}.",
                    "See the API's endpoints at /docs.")


def _wrong_method(method: str, path: str, allowed: str) -> ApiError:
    return ApiError(405, "method_not_allowed", f"{method} is not allowed on {path[:200]}.",
                    f"Use {allowed or 'another method'}; see the API's endpoints at /docs.",
                    headers={"Allow": allowed} if allowed else None)


def disk_full(exc: BaseException | None) -> ApiError | None:
    """The 507 for an OSError that means the disk (or the quota) is full, or SQLite's own
    SQLITE_FULL (not an OSError), else None."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        reason = exc.strerror
    elif isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        reason = f"run database: {exc}"
    else:
        return None
    return ApiError(507, "disk_full", f"The server ran out of disk space ({reason}).",
                    "Free space on the server (the data directory, and the temp folder that "
                    "uploads pass through), or ask the operator to; then try again.")


# --- request bodies ----------------------------------------------------------------------------

class PreviewRequest(BaseModel):
    """What POST /api/datasets/preview reads."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    dataset: str = Field(description="An uploaded file's path (or name), or a file under an "
                                     "allowed root.")
    n: int = Field(5, ge=1, le=50, description="How many rendered examples to return.")
    model_name: str = Field("", description="Tokenize with this model's tokenizer to get token "
                                            "statistics; empty = no tokenization.")
    max_seq_length: int | None = Field(None, ge=1, description="Count examples longer than this.")
    split: str = "train"
    column_mapping: dict[str, str] = {}
    strategy: Literal["sft", "qlora", "dpo", "rlhf"] = "sft"
    completion_only_loss: bool = True
    trust_remote_code: bool = False


class RenameRequest(BaseModel):
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


# --- error responses ---------------------------------------------------------------------------

_STATUS_OF = {"config": 422, "data": 422, "path_not_allowed": 403, "not_permitted": 403,
              "timeout": 504, "preview_crashed": 502}


def _error_response(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _plain_problem(err: dict) -> dict:
    """One FastAPI/pydantic validation error in the words trainers.config uses."""
    problem = plain_problem(err, where="the request")
    return {**problem, "field": problem["field"] if problem["field"] != "config" else "body"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error_response(exc.status, exc.body(), exc.headers)

    @app.exception_handler(ModelForgeError)
    async def modelforge_error(request: Request, exc: ModelForgeError):
        return _error_response(_STATUS_OF.get(exc.error_type, 400), exc.to_dict())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = [_plain_problem(e) for e in exc.errors()]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return _error_response(400, {"error_type": "bad_json", "message":
                                         "Malformed JSON: " + problems[0]["message"],
                                         "hint": "Send one valid JSON object.",
                                         "problems": problems})
        lines = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return _error_response(422, {"error_type": "invalid_request",
                                     "message": f"Invalid request: {lines}",
                                     "hint": "See the endpoint's schema at /docs.",
                                     "problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = getattr(exc, "headers", None)
        known = disk_full(exc.__cause__)  # FastAPI's 400 for a multipart body it could not spool
        if known is None and exc.status_code == 404:
            known = _no_endpoint(request.method, request.url.path)
        elif known is None and exc.status_code == 405:
            known = _wrong_method(request.method, request.url.path, (headers or {}).get("Allow"))
        if known is not None:
            return _error_response(known.status, known.body(), known.headers)
        body = exc.body() if isinstance(exc, BodyTooLarge) else \
            {"error_type": "http", "message": str(exc.detail), "hint": ""}
        return _error_response(exc.status_code, body, headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        if (full := disk_full(exc)) is not None:
            return _error_response(full.status, full.body())
        return _error_response(500, {
            "error_type": "internal", "message": f"{type(exc).__name__}: {str(exc)[:500]}",
            "hint": "This is a bug in ModelForge: please report it with the server log."})


# --- request size ------------------------------------------------------------------------------

class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, "Content Too Large")
        self.limit = limit

    def body(self) -> dict:
        return {"error_type": "too_large",
                "message": f"The request body is larger than this endpoint's limit of "
                           f"{self.limit} bytes.",
                "hint": "Upload big data sets with POST /api/datasets (the operator sets its "
                        "limit with --max-upload-mb); a config is a few KiB."}


class BodyLimitMiddleware:
    """413 (as JSON) for an /api request whose body is over its endpoint's limit: at once when
    Content-Length says so, else as soon as the streamed bytes pass it. Nothing is buffered
    beyond the limit. (FastAPI's own max_body_size answers in plain text.)"""

    def __init__(self, app, upload_limit: int):
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        limit = self.upload_limit if scope["path"].rstrip("/") == UPLOAD_PATH \
            else MAX_JSON_BYTES
        declared = dict(scope["headers"]).get(b"content-length", b"").decode() or None
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = BodyTooLarge(limit)
            return await JSONResponse(error.body(), 413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # handled by the HTTPException handler
            return message

        await self.app(scope, limited_receive, send)


# --- the router --------------------------------------------------------------------------------

def build_router(manager: RunManager, settings: Settings) -> APIRouter:
    # Declares the bearer token in /docs; modelforge_ui/http_guard.py checks it, before the body.
    bearer = HTTPBearer(auto_error=False, description="The server's token (MODELFORGE_TOKEN).")
    router = APIRouter(prefix="/api", dependencies=[Depends(bearer)])
    _add_system_routes(router, manager, settings)
    _add_run_routes(router, manager, settings)
    _add_dataset_routes(router, settings)
    _add_fallback_routes(router)  # last: it takes every /api path the routes above do not
    return router


def _add_fallback_routes(router: APIRouter) -> None:
    """The JSON 404 for an unknown /api path and the 405 for a wrong method on a known one
    (without these the dashboard, mounted at "/", answers them in Gradio's words)."""
    known = [route for route in router.routes if isinstance(route, APIRoute)]
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    @router.api_route("", methods=methods, include_in_schema=False)
    @router.api_route("/{path:path}", methods=methods, include_in_schema=False)
    def no_such_endpoint(request: Request):
        path = request.scope["path"]
        allowed = sorted({method for route in known if route.path_regex.match(path)
                          for method in route.methods})
        if allowed:
            raise _wrong_method(request.method, path, ", ".join(allowed))
        raise _no_endpoint(request.method, path)


def _add_system_routes(router: APIRouter, manager: RunManager, settings: Settings) -> None:
    doctor_cache: dict = {}
    doctor_lock = threading.Lock()

    @router.get("/health", tags=["system"])
    async def health() -> dict:
        """Cheap liveness check: never touches the disk or a lock."""
        return {"status": "ok", **manager.counts(), "auth_required": bool(settings.token),
                "torch_in_server": "torch" in sys.modules}

    @router.get("/doctor", tags=["system"])
    def doctor(refresh: bool = False) -> dict:
        """The environment report (OS, Python, torch/CUDA/GPUs, library versions), each check
        with a status and the fix. Cached for five minutes; `refresh=true` runs it again."""
        from trainers.tools.doctor import run_checks

        with doctor_lock:
            if refresh or time.time() - doctor_cache.get("at", 0) > DOCTOR_CACHE_S:
                doctor_cache.update(at=time.time(), checks=run_checks(settings.data_dir))
            checks = doctor_cache["checks"]
        worst = "error" if any(c["status"] == "error" for c in checks) else \
            "warn" if any(c["status"] == "warn" for c in checks) else "ok"
        return {"status": worst, "checked_at": doctor_cache["at"], "checks": checks}

    @router.get("/config", tags=["system"])
    async def config_schema() -> dict:
        """The training config's JSON schema (fields, defaults, descriptions) and the presets."""
        return {"schema": TrainConfig.model_json_schema(), "presets": PRESETS}


def _validated_config(raw: bytes, preset: str | None, settings: Settings) -> TrainConfig:
    cfg = build_config(_parse_json(raw), preset)  # a non-object gets build_config's message
    return check_config_policy(cfg, settings)


def _add_run_routes(router: APIRouter, manager: RunManager, settings: Settings) -> None:
    config_doc = _json_body_doc(TrainConfig.model_json_schema(), {
        "provider": "huggingface", "model_name": "meta-llama/Llama-3.2-3B",
        "max_seq_length": 2048, "task": "text-generation", "strategy": "sft",
        "dataset": "my_data.jsonl", "num_train_epochs": 3})

    @router.post("/start_training", status_code=202, tags=["runs"], openapi_extra=config_doc)
    async def start_training(request: Request, preset: str | None = Query(
            None, description=f"Start from a preset: {', '.join(PRESETS)}.")) -> JSONResponse:
        """Queue a training run. Returns 202 with the run id at once; the run starts when a
        device is free. Invalid configs get 422 with one message per field."""
        raw = await request.body()

        def submit() -> dict:
            return manager.submit(_validated_config(raw, preset, settings), source="api")

        run = await run_in_threadpool(submit)
        return JSONResponse(
            {"run_id": run["id"], "status": run["status"], "name": run["name"],
             "queue_position": manager.queue_position(run["id"])},
            status_code=202, headers={"Location": f"/api/runs/{run['id']}"})

    @router.post("/config/check", tags=["runs"], openapi_extra=config_doc)
    async def check_config(request: Request, preset: str | None = None) -> dict:
        """Validate a config (and the server's path rules) without starting anything."""
        raw = await request.body()
        try:
            cfg = await run_in_threadpool(_validated_config, raw, preset, settings)
        except (ConfigError, PathRefused, NotPermittedError) as exc:
            return {"ok": False, "problems": exc.to_dict().get("problems", [])}
        return {"ok": True, "problems": [], "config": cfg.model_dump(mode="json")}

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
            raise _not_found(run_id) from None

    @router.get("/runs/{run_id}", tags=["runs"])
    def run_detail(run_id: str) -> dict:
        """Status, config, latest progress, summary (metrics, or the error and its fix)."""
        return get_run(run_id)

    @router.get("/runs/{run_id}/events", tags=["runs"])
    def run_events(run_id: str, after: int = Query(0, ge=0),
                   limit: int = Query(EVENTS_PAGE, ge=1, le=EVENTS_PAGE)) -> dict:
        """Events with seq >= after. Poll with after = the returned next_after."""
        try:
            events = manager.events(run_id, after, limit)
            status = manager.registry.get(run_id)["status"]
        except KeyError:
            raise _not_found(run_id) from None
        next_after = events[-1]["seq"] + 1 if events else after
        return {"run_id": run_id, "status": status, "events": events, "next_after": next_after}

    @router.post("/runs/{run_id}/stop", status_code=202, tags=["runs"])
    def stop_run(run_id: str) -> dict:
        """Queued: removed from the queue. Running: stops at the next step and saves the
        adapter; forced after the grace time."""
        get_run(run_id)
        return manager.stop(run_id)

    @router.patch("/runs/{run_id}", tags=["runs"])
    def rename_run(run_id: str, body: RenameRequest) -> dict:
        """Rename a run."""
        get_run(run_id)
        return manager.rename(run_id, body.name)

    @router.delete("/runs/{run_id}", tags=["runs"])
    def delete_run(run_id: str) -> dict:
        """Delete a finished run's record and its run directory (adapter included). A custom
        output_dir outside the run directory is left alone."""
        get_run(run_id)
        try:
            manager.delete(run_id)
        except ValueError as exc:
            raise ApiError(409, "conflict", f"{exc}.",
                           f"POST /api/runs/{run_id}/stop first.") from None
        return {"deleted": run_id}

    @router.get("/runs/{run_id}/log", tags=["runs"], response_class=PlainTextResponse)
    def run_log(run_id: str, tail_bytes: int = Query(20000, ge=1, le=2**22)) -> str:
        """The end of the worker's train.log (stdout and stderr)."""
        from trainers.runs.process import log_tail

        return log_tail(Path(get_run(run_id)["run_dir"]), tail_bytes)

    @router.get("/runs/{run_id}/adapter", tags=["runs"], response_class=FileResponse)
    def download_adapter(run_id: str) -> FileResponse:
        """The trained LoRA adapter (and tokenizer files) as a zip."""
        run = get_run(run_id)
        adapter = _adapter_dir(run)
        path = _zip_dir(adapter)
        return FileResponse(path, media_type="application/zip",
                            filename=f"{run['id']}-adapter.zip",
                            background=BackgroundTask(os.unlink, path))


def _adapter_dir(run: dict) -> Path:
    if run["status"] in ("queued", "running"):
        raise ApiError(409, "conflict", f"Run {run['id']} is {run['status']}: it has no final "
                                        "adapter yet.", "Wait until it has finished.")
    summary = run.get("summary") or {}
    adapter = Path(summary.get("adapter_dir") or Path(run["run_dir"]) / "adapter")
    if not (adapter / "adapter_config.json").is_file():
        raise ApiError(404, "no_adapter", f"Run {run['id']} ({run['status']}) saved no adapter.",
                       "Only succeeded runs, and runs stopped gracefully, have one.")
    return adapter


def _zip_dir(directory: Path) -> str:
    fd, path = tempfile.mkstemp(prefix="modelforge-adapter-", suffix=".zip")
    with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(directory.rglob("*")):
            if file.is_file() and not file.is_symlink():
                zf.write(file, file.relative_to(directory).as_posix())
    return path


# --- data sets ---------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_upload_lock = threading.Lock()


def safe_filename(filename: str | None) -> str:
    """The upload's base name with only safe characters, cut to MAX_NAME, or ApiError(422)."""
    base = re.split(r"[\\/]", filename or "")[-1]
    name = _SAFE_NAME.sub("_", base).lstrip(".")
    suffix = Path(name).suffix.lower()
    if not name or suffix not in EXTENSIONS:
        raise ApiError(422, "data", f"Cannot store {filename!r}: data sets must be "
                                    f"{', '.join(EXTENSIONS)} files.",
                       "Rename the file with one of those extensions.",
                       [{"field": "file", "message": "needs a .json, .jsonl, .csv or .parquet "
                                                     "name"}])
    if len(name) > MAX_NAME:  # only ASCII is left: characters are bytes
        name = name[:MAX_NAME - len(suffix)] + name[-len(suffix):]
    return name


def store_upload(source, name: str, settings: Settings) -> Path:
    """Copy the upload to the upload directory under a new name; enforce the size limit.
    A full disk is ApiError(507), and no partial file stays."""
    try:
        return _store(source, name, settings)
    except OSError as exc:
        if (full := disk_full(exc)) is None:
            raise
        raise full from None


def _store(source, name: str, settings: Settings) -> Path:
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=settings.uploads_dir, prefix=".upload-", suffix=".part")
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(2**20):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise ApiError(413, "too_large",
                                   f"The file is larger than the upload limit of "
                                   f"{settings.max_upload_mb:g} MiB.",
                                   "Ask the operator to raise --max-upload-mb, or put the file "
                                   "under an allowed root on the server.")
                out.write(chunk)
        if size == 0:
            raise ApiError(422, "data", "The uploaded file is empty.", "Upload a non-empty file.")
        with _upload_lock:  # never overwrite an earlier upload
            dest, n = settings.uploads_dir / name, 1
            while dest.exists():
                dest = settings.uploads_dir / f"{Path(name).stem}-{n}{Path(name).suffix}"
                n += 1
            os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _add_dataset_routes(router: APIRouter, settings: Settings) -> None:
    @router.post("/datasets", status_code=201, tags=["datasets"])
    def upload_dataset(file: UploadFile = File(
            description="A .json, .jsonl, .csv or .parquet data set.")) -> dict:
        """Upload a data set (multipart field `file`); returns the path to use as `dataset`."""
        dest = store_upload(file.file, safe_filename(file.filename), settings)
        return {"path": str(dest), "name": dest.name, "size_bytes": dest.stat().st_size}

    @router.get("/datasets", tags=["datasets"])
    def list_datasets() -> dict:
        """The uploaded data sets."""
        folder = settings.uploads_dir
        found = []
        for path in (folder.iterdir() if folder.is_dir() else []):
            try:  # a file deleted while we list is simply not listed
                info = path.stat()
            except FileNotFoundError:
                continue
            if path.is_file() and not path.name.startswith("."):
                found.append({"name": path.name, "path": str(path), "size_bytes": info.st_size,
                              "modified": info.st_mtime})
        return {"datasets": sorted(found, key=lambda d: d["modified"], reverse=True)}

    @router.post("/datasets/preview", tags=["datasets"])
    def preview_dataset(body: PreviewRequest) -> dict:
        """The detected format, the first n examples as the trainer sees them and, with a
        model_name, token-length statistics (tokenized in a subprocess)."""
        from trainers.tools.preview import run_preview

        request = body.model_dump()
        roots = settings.roots()
        if not looks_like_hub_dataset(body.dataset):
            request["dataset"] = str(resolve_allowed_path(body.dataset, roots,
                                                          settings.uploads_dir, "dataset"))
        if body.model_name and is_local_model_path(body.model_name, settings.models_dir):
            request["model_name"] = str(resolve_allowed_path(body.model_name, roots,
                                                             settings.models_dir, "model_name"))
        if body.trust_remote_code and not settings.allow_trust_remote_code:
            raise NotPermittedError("trust_remote_code", "trust_remote_code is disabled on this "
                                    "server.", "Set it to false, or ask the operator to start "
                                    "the server with --allow-trust-remote-code.")
        try:
            return run_preview(request)
        except ModelForgeError as exc:
            if exc.error_type in ("timeout", "preview_crashed"):
                raise
            # the file or the tokenizer could not be read: the request's fault, never a 500
            raise ApiError(422, exc.error_type, exc.message, exc.hint) from None
