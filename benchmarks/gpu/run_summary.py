"""What the GPU evidence scripts read out of one finished worker run (shared by train_gpu.py and
dpo_gpu.py), and the machine's description that goes beside the numbers."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from trainers.events import read_events

WARMUP_STEPS = 3


def summarize_run(run_dir: Path, returncode: int, wall: float) -> dict:
    """Steady-state tokens/s (median of the progress events after the warm-up; non-padding
    tokens), peak memory, first and last loss, and the started event's record of what ran."""
    events = read_events(run_dir)
    started = next((e for e in events if e["type"] == "started"), {})
    progress = [e for e in events if e["type"] == "progress"]
    end = events[-1] if events else {}
    steady = [e["tokens_per_s"] for e in progress if e["step"] > WARMUP_STEPS and e["tokens_per_s"]]
    reserved = [e["gpu_mem_reserved_gib"] for e in progress if e.get("gpu_mem_reserved_gib")]
    result = {
        "status": end.get("type", "no events"), "returncode": returncode,
        "wall_time_s": round(wall, 1), "train_runtime_s": end.get("train_runtime_s"),
        "steps": end.get("steps"), "tokens_seen": end.get("tokens_seen"),
        "tokens_per_s_median": round(statistics.median(steady), 1) if steady else None,
        "tokens_per_s_min": min(steady) if steady else None,
        "tokens_per_s_max": max(steady) if steady else None,
        "world_size": end.get("world_size", 1),
        "peak_gpu_mem_allocated_gib": end.get("peak_gpu_mem_allocated_gib"),
        "peak_gpu_mem_allocated_gib_per_rank": end.get("peak_gpu_mem_allocated_gib_per_rank"),
        "max_gpu_mem_reserved_gib": max(reserved) if reserved else None,
        "first_loss": progress[0]["loss"] if progress else None,
        "last_loss": progress[-1]["loss"] if progress else None,
        "telemetry_overhead_pct": end.get("telemetry_overhead_pct"),
        "mfu_median": _median([e.get("mfu") for e in progress if e["step"] > WARMUP_STEPS]),
        "speed_mode": started.get("speed_mode"),
        "micro_batch": (started.get("per_device_train_batch_size"),
                        started.get("gradient_accumulation_steps")),
        "what_ran": {k: started.get(k) for k in (
            "provider", "architecture", "attention", "quantization", "dtype", "max_seq_length",
            "unsloth", "warnings", "device_name", "trainable_parameters", "trl_lm_head")},
        "versions": started.get("versions"),
        "per_step": [[e["step"], e["tokens_seen"], e["tokens_per_s"], e.get("step_time_s")]
                     for e in progress],  # step, tokens seen so far, tokens/s, step time s
    }
    if end.get("type") == "failed":
        result["error"] = {k: end.get(k) for k in ("error_type", "message", "hint")}
    return result


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def environment() -> dict:
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            return None

    return {"python": platform.python_version(), "platform": platform.platform(),
            "nvidia_smi": run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader"]),
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith(("UNSLOTH", "CUDA", "PYTORCH", "HF_", "TOKENIZERS"))},
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
