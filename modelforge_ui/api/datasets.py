"""/api/datasets: upload and list data sets, and preview one as the trainer reads it."""

from __future__ import annotations

from fastapi import APIRouter, File, UploadFile
from fastapi.concurrency import run_in_threadpool

from modelforge_ui import uploads  # the module: it imports api.errors, so either loads first
from modelforge_ui.api.busy import BusyLimits
from modelforge_ui.api.errors import ApiError
from modelforge_ui.security import check_preview_policy
from modelforge_ui.settings import Settings
from trainers.errors import ModelForgeError
from trainers.tools.preview import PreviewRequest

UPLOAD_PATH = "/api/datasets"  # the one /api endpoint whose body is multipart, not JSON


def add_dataset_routes(router: APIRouter, settings: Settings, busy: BusyLimits) -> None:
    @router.post("/datasets", status_code=201, tags=["datasets"])
    def upload_dataset(file: UploadFile = File(
            description="A .json, .jsonl, .csv or .parquet data set.")) -> dict:
        """Upload a data set (multipart field `file`); returns the path to use as `dataset`."""
        dest = uploads.store_upload(file.file, file.filename, settings)
        return {"path": str(dest), "name": dest.name, "size_bytes": dest.stat().st_size}

    @router.get("/datasets", tags=["datasets"])
    def list_datasets() -> dict:
        """The uploaded data sets, newest first."""
        return {"datasets": uploads.list_uploads(settings)}

    @router.post("/datasets/preview", tags=["datasets"])
    async def preview_dataset(body: PreviewRequest) -> dict:
        """The detected format, the first n examples as the trainer sees them and, with a
        model_name, token-length statistics (tokenized in a subprocess)."""
        with busy.slot("preview"):  # past the limit: refused here, without a pool thread
            return await run_in_threadpool(_preview, body, settings)


def _preview(body: PreviewRequest, settings: Settings) -> dict:
    from trainers.tools.preview import run_preview

    request = check_preview_policy(body, settings)
    try:
        return run_preview(request)
    except ModelForgeError as exc:
        if exc.error_type in ("timeout", "preview_crashed"):
            raise
        # the file or the tokenizer could not be read: the request's fault, never a 500
        raise ApiError(422, exc.error_type, exc.message, exc.hint) from None
