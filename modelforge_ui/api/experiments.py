"""POST /api/runs/{id}/resume (continue a run from its last checkpoint, as a new run) and
GET /api/compare?ids=... (runs side by side). The logic is trainers/runs/resume.py and
trainers/runs/compare.py; this module is their HTTP face."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from modelforge_ui.api.errors import ApiError, not_found
from modelforge_ui.security import check_config_policy
from modelforge_ui.settings import Settings
from trainers.config import build_config
from trainers.runs import resume
from trainers.runs.compare import compare
from trainers.runs.manager import RunManager


def resume_run(manager: RunManager, settings: Settings, run_id: str, overrides: dict | None,
               source: str) -> dict:
    """Queue the run that continues `run_id`; the dashboard calls this too. Raises KeyError
    for an unknown run, NotResumable (409) or ConfigError / a path refusal."""
    old = manager.registry.get(run_id)
    resume.check_resumable(old)  # says why before the config is even built
    cfg = check_config_policy(build_config(resume.resume_config(old, overrides)), settings)
    return manager.submit(cfg, source=source)


def add_experiment_routes(router: APIRouter, manager: RunManager, settings: Settings) -> None:
    @router.post("/runs/{run_id}/resume", status_code=202, tags=["runs"], openapi_extra={
        "requestBody": {"required": False, "content": {"application/json": {
            "schema": {"type": "object", "description": "Optional config fields to change "
                       "(only " + ", ".join(resume.MAY_DIFFER[3:]) + ", name and output_dir "
                       "may differ from the old run)."},
            "example": {"max_steps": 200}}}}})
    async def resume_endpoint(run_id: str, request: Request) -> JSONResponse:
        """Continue a stopped, failed or interrupted run from its last checkpoint: a new run
        (its own folder, linked by resume_from) at the checkpoint's step with the same
        schedule and data order. 409 when the run has no checkpoint or is still active."""
        raw = await request.body()
        overrides = None
        if raw.strip():
            from modelforge_ui.api.runs import _parse_json

            overrides = _parse_json(raw)
            if not isinstance(overrides, dict):
                raise ApiError(422, "config", "The body must be a JSON object of config fields "
                                              "to change.", "Send e.g. {\"max_steps\": 200}, or "
                                                            "no body.",
                               [{"field": "body", "message": "must be a JSON object"}])

        def submit() -> dict:
            try:
                return resume_run(manager, settings, run_id, overrides, "api")
            except KeyError:
                raise not_found(run_id) from None

        run = await run_in_threadpool(submit)
        info = resume.read_resume_file(run["run_dir"])
        return JSONResponse(
            {"run_id": run["id"], "status": run["status"], "name": run["name"],
             "resumed_from": run_id, "checkpoint_step": info["step"],
             "queue_position": manager.queue_position(run["id"])},
            status_code=202, headers={"Location": f"/api/runs/{run['id']}"})

    @router.get("/compare", tags=["runs"])
    def compare_runs(ids: list[str] = Query(
            ..., description="Two or more run ids, comma-separated (ids=A,B) or repeated "
                             "(ids=A&ids=B).")) -> dict:
        """Runs side by side: each run's loss, eval loss, tokens/s and memory curves
        ([step, value] pairs), its outcomes (time, tokens/s, peak memory, final and best
        losses) and the config fields whose values differ. 422 for fewer than two ids, 404
        for an unknown one."""
        return compare(manager, ids)
