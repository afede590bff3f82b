"""The VRAM estimate (trainers/estimate.py) as the Training tab shows it under Validate and Start."""

from __future__ import annotations

from trainers.config import TrainConfig
from trainers.estimate import gpu_memory_gib
from trainers.speed import estimate_as_run


def estimate_markdown(cfg: TrainConfig, gpu_gib: float | None = None) -> str:
    """One paragraph: the estimated peak, its largest parts, and the verdict for this GPU."""
    result = estimate_as_run(cfg, gpu_gib if gpu_gib is not None else gpu_memory_gib())
    if not result["available"]:
        return f"**GPU memory estimate:** not available: {result['reason']}."
    parts = sorted(((v, k) for k, v in result["components_gib"].items() if v), reverse=True)
    biggest = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for v, k in parts[:3])
    mark = "" if result["fits"] is not False else "⚠ "
    settings = " with speed mode's settings" if "speed_mode" in result else ""
    return (f"**{mark}GPU memory estimate{settings}:** peak about "
            f"{result['peak_allocated_gib']:.1f} GiB allocated ({biggest} GiB), about "
            f"{result['device_gib']:.1f} GiB on the device; "
            f"{result['verdict'].rstrip('.')}.")


def start_warning(cfg: TrainConfig) -> str:
    """A warning for Start when the run is predicted not to fit this machine's GPU, else ""."""
    result = estimate_as_run(cfg, gpu_memory_gib())
    if result.get("fits") is not False:
        return ""
    return f" **Warning:** {result['verdict'].rstrip('.')}."
