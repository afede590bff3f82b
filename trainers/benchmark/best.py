"""'Each at its best' (spec.padding = "best"): what each provider runs with when it is not
matched to the other but tuned, decided once by the runner for every variant and plain run:

- padding-free batches for both (Unsloth's own default; for Hugging Face TRL's padding_free,
  with transformers keeping the rows apart by their position ids);
- gradient checkpointing off where the VRAM estimate (trainers/estimate.py) says the run fits
  this GPU without it, on otherwise;
- Liger kernels for Hugging Face (TRL's use_liger_kernel) where liger-kernel is installed and
  there is a GPU; Unsloth has its own fused kernels.
Each decision is recorded with its reason, in prepared.json and in every run's result.
"""

from __future__ import annotations

import importlib.util


def decide(spec, model_dir: str, provider: str, mode: str, gpu_gib: float | None) -> dict:
    from trainers.benchmark.variant import train_config
    from trainers.estimate import estimate

    cfg = train_config(spec, model_dir, provider, mode).model_copy(
        update={"gradient_checkpointing": False})
    if gpu_gib is None:
        checkpointing, why = spec.gradient_checkpointing, "no GPU found: kept the spec's setting"
    else:
        verdict = estimate(cfg, gpu_gib)
        if not verdict["available"]:
            checkpointing, why = spec.gradient_checkpointing, f"kept: {verdict['reason']}"
        else:
            checkpointing = not verdict["fits"]
            why = f"without checkpointing: {verdict['verdict']}"
    liger = provider == "huggingface" and gpu_gib is not None \
        and importlib.util.find_spec("liger_kernel") is not None
    liger_why = ("Unsloth uses its own kernels" if provider != "huggingface" else
                 "installed" if liger else
                 "no GPU (Liger's kernels are Triton GPU kernels)" if gpu_gib is None else
                 "liger-kernel is not installed (pip install liger-kernel)")
    return {"padding_free": True, "gradient_checkpointing": checkpointing,
            "gradient_checkpointing_reason": why, "liger_kernel": liger,
            "liger_kernel_reason": liger_why}


def decide_all(spec, model_dir: str) -> dict:
    """{"PROVIDER-MODE": decision} for the spec's variants (empty unless padding is "best")."""
    if spec.padding != "best":
        return {}
    from trainers.estimate import gpu_memory_gib

    gpu = gpu_memory_gib()
    return {f"{p}-{m}": decide(spec, model_dir, p, m, gpu)
            for m in spec.modes for p in spec.providers}
