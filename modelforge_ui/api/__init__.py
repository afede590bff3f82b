"""The REST API under /api, one module per resource: runs.py (training runs, sweeps), datasets.py
(uploads and previews), benchmarks.py (matched benchmarks), export.py (merged and GGUF exports),
estimate.py (peak GPU memory of a config), system.py (health, doctor, schema); busy.py bounds how
many expensive requests run at once; errors.py makes every error a JSON
{"error_type", "message", "hint"} (plus "problems" for field-level errors) with the texts the
CLI prints, and limits.py caps request bodies.

Handlers that touch files or SQLite are plain `def`s, so FastAPI runs them in its thread pool
and the event loop (and /api/health) never waits on them. No torch is imported here: previews
that need a tokenizer and the doctor's torch probe run in subprocesses.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.security import HTTPBearer

from modelforge_ui.api.benchmarks import add_benchmark_routes
from modelforge_ui.api.busy import BusyLimits
from modelforge_ui.api.datasets import UPLOAD_PATH, add_dataset_routes
from modelforge_ui.api.experiments import add_experiment_routes
from modelforge_ui.api.errors import (ApiError, add_fallback_routes, disk_full,
                                      install_error_handlers)
from modelforge_ui.api.estimate import add_estimate_routes
from modelforge_ui.api.export import add_export_routes
from modelforge_ui.api.limits import MULTIPART_OVERHEAD, BodyLimitMiddleware
from modelforge_ui.api.runs import add_run_routes
from modelforge_ui.api.system import add_system_routes
from modelforge_ui.settings import Settings
from trainers.runs.manager import RunManager

__all__ = ["ApiError", "BodyLimitMiddleware", "MULTIPART_OVERHEAD", "UPLOAD_PATH", "build_router",
           "disk_full", "install_error_handlers"]


def build_router(manager: RunManager, settings: Settings) -> APIRouter:
    # Declares the bearer token in /docs; modelforge_ui/http_guard.py checks it, before the body.
    bearer = HTTPBearer(auto_error=False, description="The server's token (MODELFORGE_TOKEN).")
    router = APIRouter(prefix="/api", dependencies=[Depends(bearer)])
    busy = BusyLimits(settings.concurrent_per_kind)
    add_system_routes(router, manager, settings, busy)
    add_run_routes(router, manager, settings, busy)
    add_benchmark_routes(router, manager, settings)
    add_export_routes(router, manager, settings)
    add_estimate_routes(router, settings)
    add_experiment_routes(router, manager, settings)  # resume, compare
    add_dataset_routes(router, settings, busy)
    add_fallback_routes(router)  # last: it takes every /api path the routes above do not
    return router
