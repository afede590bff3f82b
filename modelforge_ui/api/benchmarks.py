"""/api/benchmarks: queue a matched Hugging Face-vs-Unsloth benchmark and read its outcome.

The body is the spec of the Benchmark tab and `modelforge bench` (trainers.benchmark.spec),
validated the same way (build_spec, the server's path rules, GPU-only choices refused on a
machine without a GPU) and queued in the runs' queue as a job of kind "benchmark"
(trainers.runs.jobs.submit_benchmark, which the tab calls too).
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from modelforge_ui.api.errors import ApiError
from modelforge_ui.api.runs import EVENTS_PAGE, _json_body_doc, _parse_json, events_page
from modelforge_ui.security import check_spec_policy
from modelforge_ui.settings import Settings
from trainers.benchmark.spec import BenchmarkSpec, build_spec
from trainers.runs.jobs import submit_benchmark
from trainers.runs.manager import RunManager

EXAMPLE = {"model": "llama-3.2-1b", "synthetic_weights": True, "modes": ["lora16"],
           "steps": 30, "repeats": 2}


def results(run_dir: str) -> dict | None:
    """RUN_DIR/results.json (written whole after each variant, replaced atomically), or None
    before the first variant has finished."""
    path = Path(run_dir) / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def benchmark_detail(run: dict) -> dict:
    """What GET /api/benchmarks/{id} answers: the record, the verdict (the dashboard's words),
    the per-mode matching verdicts, the table and the Markdown report."""
    from modelforge_ui.benchmark_view import verdict_markdown

    summary = results(run["run_dir"])
    report = Path(run["run_dir"]) / "results.md"
    return {
        "id": run["id"], "name": run["name"], "status": run["status"],
        "queue_position": run.get("queue_position"), "spec": run["config"],
        "progress": run.get("progress"), "outcome": run.get("summary"),
        "verdict": verdict_markdown(summary, run["status"]),
        "complete": summary.get("complete") if summary else None,
        "matching": {mode: result.get("verdict") for mode, result in
                     (summary.get("matching") or {}).items()} if summary else {},
        "table": summary.get("table") if summary else [],
        "report": report.read_text(encoding="utf-8") if summary and report.is_file() else "",
    }


def add_benchmark_routes(router: APIRouter, manager: RunManager, settings: Settings) -> None:
    def get_benchmark(benchmark_id: str) -> dict:
        try:
            run = manager.get(benchmark_id)
        except KeyError:
            run = None
        if run is None or run["kind"] != "benchmark":
            raise ApiError(404, "not_found", f"No benchmark with id {benchmark_id!r}.",
                           "List the benchmarks with GET /api/benchmarks (a training run's "
                           "id is read at /api/runs/{id}).")
        return run

    @router.post("/benchmarks", status_code=202, tags=["benchmarks"],
                 openapi_extra=_json_body_doc(BenchmarkSpec.model_json_schema(), EXAMPLE))
    async def start_benchmark(request: Request) -> JSONResponse:
        """Queue a benchmark (the Benchmark tab's and `modelforge bench`'s spec). Returns 202
        with its id at once; it runs when a device is free, in the same queue as training
        runs. An invalid spec gets 422 with one message per field."""
        raw = await request.body()

        def submit() -> dict:
            spec = check_spec_policy(build_spec(_parse_json(raw)), settings)
            return submit_benchmark(manager, spec, source="api")

        run = await run_in_threadpool(submit)
        return JSONResponse(
            {"benchmark_id": run["id"], "status": run["status"], "name": run["name"],
             "queue_position": manager.queue_position(run["id"])},
            status_code=202, headers={"Location": f"/api/benchmarks/{run['id']}"})

    @router.get("/benchmarks", tags=["benchmarks"])
    def list_benchmarks(limit: int = Query(100, ge=1, le=1000)) -> dict:
        """Benchmarks, newest first."""
        found = manager.registry.list(kind="benchmark")
        return {"benchmarks": found[:limit], "total": len(found)}

    @router.get("/benchmarks/{benchmark_id}", tags=["benchmarks"])
    def benchmark(benchmark_id: str) -> dict:
        """Status, the verdict (Markdown, as the dashboard shows it), the matching verdict of
        each mode, the results table (one row per provider and mode), the report (results.md).
        The table fills as variants finish; `complete` says when all have."""
        return benchmark_detail(get_benchmark(benchmark_id))

    @router.get("/benchmarks/{benchmark_id}/events", tags=["benchmarks"])
    def benchmark_events(benchmark_id: str, after: int = Query(0, ge=0),
                         limit: int = Query(EVENTS_PAGE, ge=1, le=EVENTS_PAGE)) -> dict:
        """Events with seq >= after (variant_started, progress, variant_finished, ...). Poll
        with after = the returned next_after."""
        get_benchmark(benchmark_id)
        return events_page(manager, benchmark_id, after, limit)

    @router.post("/benchmarks/{benchmark_id}/stop", status_code=202, tags=["benchmarks"])
    def stop_benchmark(benchmark_id: str) -> dict:
        """Queued: removed from the queue. Running: stops after the current variant; the
        variants that finished keep their results."""
        get_benchmark(benchmark_id)
        return manager.stop(benchmark_id)
