"""The environment recorded next to every number: GPU, driver, CUDA, libraries, machine.

Read without creating a CUDA context (nvidia-smi, package metadata), so the runner holds no GPU
memory while its variants run.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys


def gpus_from_nvidia_smi() -> tuple[list[dict], str | None]:
    """(GPUs as nvidia-smi lists them, None) or ([], the reason there are none)."""
    if shutil.which("nvidia-smi") is None:
        return [], "nvidia-smi not found"
    query = "name,driver_version,memory.total"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi failed: {exc}"
    if out.returncode != 0:
        return [], f"nvidia-smi failed: {out.stderr.strip()[:300]}"
    gpus = []
    for line in out.stdout.strip().splitlines():
        name, driver, memory = [x.strip() for x in line.split(",")]
        gpus.append({"name": name, "driver_version": driver, "memory_total": memory})
    return gpus, None


def environment() -> dict:
    from trainers.train.providers.base import library_versions

    gpus, reason = gpus_from_nvidia_smi()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "gpus_note": reason,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "versions": library_versions(),
        "env": {k: v for k, v in os.environ.items()
                if k.startswith(("UNSLOTH_", "HF_HUB_OFFLINE", "PYTORCH_", "CUDA_"))},
    }
