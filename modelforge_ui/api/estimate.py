"""/api/config/estimate: the peak GPU memory a config will need, before anything loads
(trainers/estimate.py; plain Python, no torch)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from modelforge_ui.api.runs import _validated_config
from modelforge_ui.settings import Settings
from trainers.estimate import gpu_memory_gib
from trainers.speed import estimate_as_run


def add_estimate_routes(router: APIRouter, settings: Settings) -> None:
    @router.post("/config/estimate", tags=["runs"])
    async def estimate_config(request: Request, preset: str | None = None,
                              gpu_gib: float | None = Query(
                                  None, gt=0, le=10_000, description="Plan for a GPU of this "
                                  "many GiB; default: the smallest GPU of this machine.")) -> dict:
        """Validate a config (as /api/config/check does) and estimate its peak GPU memory:
        weights, adapter and optimizer state, activations, logits; whether it fits the GPU,
        and what to change when it does not. With speed_mode, the estimate is of the settings
        speed mode picks for that GPU, listed under "speed_mode"."""
        raw = await request.body()

        def work() -> dict:
            cfg = _validated_config(raw, preset, settings)
            return estimate_as_run(cfg, gpu_gib if gpu_gib is not None else gpu_memory_gib())

        return await run_in_threadpool(work)
