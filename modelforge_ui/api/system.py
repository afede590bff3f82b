"""/api/health, /api/doctor (the environment report) and /api/config (the schema)."""

from __future__ import annotations

import sys

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from modelforge_ui.api.busy import BusyLimits
from modelforge_ui.settings import Settings
from trainers.config import PRESETS, TrainConfig
from trainers.runs.manager import RunManager


def add_system_routes(router: APIRouter, manager: RunManager, settings: Settings,
                      busy: BusyLimits) -> None:
    @router.get("/health", tags=["system"])
    async def health() -> dict:
        """Cheap liveness check: never touches the disk or a lock."""
        return {"status": "ok", **manager.counts(), "auth_required": bool(settings.token),
                "torch_in_server": "torch" in sys.modules}

    @router.get("/doctor", tags=["system"])
    async def doctor(refresh: bool = False) -> dict:
        """The environment report (OS, Python, torch/CUDA/GPUs, library versions), each check
        with a status and the fix. Cached for five minutes; `refresh=true` runs it again."""
        from trainers.tools.doctor import cached_checks, worst_status

        # A refresh holds the others on its lock: all are bounded, and a refusal takes no thread.
        with busy.slot("doctor"):
            checked_at, checks = await run_in_threadpool(cached_checks, settings.data_dir,
                                                         refresh)
        return {"status": worst_status(checks), "checked_at": checked_at, "checks": checks}

    @router.get("/config", tags=["system"])
    async def config_schema() -> dict:
        """The training config's JSON schema (fields, defaults, descriptions) and the presets."""
        return {"schema": TrainConfig.model_json_schema(), "presets": PRESETS}
