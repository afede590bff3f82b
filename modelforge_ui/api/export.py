"""POST /api/runs/{id}/export (merge the adapter into its base model, optionally convert the
result to GGUF) and GET /api/runs/{id}/gguf/{type} (the GGUF file). The work is
`python -m trainers.tools.export` in its own process, as the Playground tab runs it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal, Optional

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from modelforge_ui.api.errors import ApiError, not_found
from modelforge_ui.security import check_run_model_policy
from modelforge_ui.settings import Settings
from modelforge_ui.tool_process import off_a_busy_gpu, stream_module
from trainers.runs.jobs import adapter_dir
from trainers.runs.manager import RunManager
from trainers.tools.export import DTYPES, GGUF_DIR
from trainers.tools.gguf_export import GGUF_TYPES


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Literal[DTYPES] = Field("float16", description="The merged model's 16-bit type.")
    gguf: Optional[Literal[tuple(GGUF_TYPES)]] = Field(
        None, description="Also convert the merged model to this GGUF type (llama.cpp, "
                          "Ollama, LM Studio), with an Ollama Modelfile beside it; bf16 "
                          "merges in bfloat16.")


def gguf_path(run: dict, gguf_type: str) -> Path | None:
    """The GGUF file of this type that an export of the run wrote, or None."""
    return next((Path(run["run_dir"]) / GGUF_DIR / gguf_type).glob("*.gguf"), None)


def add_export_routes(router: APIRouter, manager: RunManager, settings: Settings) -> None:
    one_at_a_time = threading.Lock()  # an export loads a whole model: one is enough

    def finished_run(run_id: str) -> dict:
        try:
            run = manager.get(run_id)
        except KeyError:
            raise not_found(run_id) from None
        adapter_dir(run)  # 409 while active, 404 without an adapter
        return run

    @router.post("/runs/{run_id}/export", tags=["runs"])
    def export_run(run_id: str, body: Optional[ExportRequest] = None) -> dict:
        """Merge the run's adapter into its base model (RUN_DIR/merged) and, with `gguf`,
        write RUN_DIR/gguf/TYPE/RUN_ID-TYPE.gguf and an Ollama Modelfile. Answers when done
        (minutes for a large model). A family the GGUF converter does not know is refused
        (422) before anything loads."""
        body = body or ExportRequest()
        run = finished_run(run_id)
        check_run_model_policy(run["config"], settings)
        args = [run["run_dir"], "--dtype", body.dtype] + (["--gguf", body.gguf] if body.gguf
                                                          else [])
        if not one_at_a_time.acquire(blocking=False):
            raise ApiError(409, "conflict", "Another export is running on this server.",
                           "Try again when it has finished.")
        try:
            messages = list(stream_module("trainers.tools.export", args,
                                          extra_env=off_a_busy_gpu(manager)[0]))
        finally:
            one_at_a_time.release()
        done = next((m for m in messages if m.get("done")), None)
        if done is None:
            failure = next((m for m in messages if m.get("error_type")), messages[-1])
            status = 422 if failure.get("error_type") == "export" else 500
            raise ApiError(status, failure.get("error_type", "export_crashed"),
                           failure.get("message") or failure.get("stderr_tail", "")[-500:],
                           failure.get("hint", "See the server log."))
        result = {"out_dir": done["out_dir"], "log": [m["message"] for m in messages
                                                      if "stage" in m]}
        if body.gguf:
            path = Path(done["gguf"])
            result.update(gguf=str(path), gguf_bytes=path.stat().st_size,
                          download=f"/api/runs/{run_id}/gguf/{body.gguf}",
                          modelfile=(path.parent / "Modelfile").read_text(encoding="utf-8"))
        return result

    @router.get("/runs/{run_id}/gguf/{gguf_type}", tags=["runs"], response_class=FileResponse)
    def download_gguf(run_id: str, gguf_type: str) -> FileResponse:
        """The GGUF file an export wrote (404 until POST /api/runs/{id}/export has made it)."""
        path = gguf_path(finished_run(run_id), gguf_type) if gguf_type in GGUF_TYPES else None
        if path is None:
            raise ApiError(404, "not_found", f"Run {run_id} has no {gguf_type[:20]} GGUF.",
                           f"Export it first: POST /api/runs/{run_id}/export with "
                           f"{{\"gguf\": \"q8_0\"}} (types: {', '.join(GGUF_TYPES)}).")
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)
