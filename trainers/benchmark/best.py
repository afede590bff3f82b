"""'Each at its best' (spec.padding = "best"): each provider with the speed mode's settings
(trainers/speed.py), decided once by the runner for every variant and plain run, with the
spec's batch kept (one batch per measured step):

- padding-free batches for both (Unsloth's own default; for Hugging Face TRL's padding_free,
  with transformers keeping the rows apart by their position ids);
- gradient checkpointing off where the VRAM estimate (trainers/estimate.py) says the run fits
  this GPU without it, on otherwise; asked for the largest batch these rows make (the rows are
  known and padding-free), not the worst case of batch_size rows of max_seq_length;
- per-row attention for Hugging Face (`attention: sdpa_per_row`; Unsloth keeps rows apart
  itself);
- Liger kernels for Hugging Face (TRL's use_liger_kernel) where liger-kernel is installed and
  there is a GPU; Unsloth has its own fused kernels;
- fused LoRA layers for Hugging Face's 16-bit LoRA (trainers/train/fused_lora.py; the plain
  script carries the same forward).
cuDNN's attention is the spec's cudnn_attention for every run, not decided here.
Each decision is recorded with its reason, in prepared.json and in every run's result.
"""

from __future__ import annotations


def decide(spec, model_dir: str, provider: str, mode: str, gpu_gib: float | None,
           batch_tokens: int | None = None) -> dict:
    from trainers import speed
    from trainers.benchmark.variant import train_config

    plan = speed.decide(train_config(spec, model_dir, provider, mode), gpu_gib, keep_batch=True,
                        batch_tokens=batch_tokens)
    updates, why = plan["updates"], plan["reasons"]
    return {"padding_free": True,
            "gradient_checkpointing": updates.get("gradient_checkpointing",
                                                  spec.gradient_checkpointing),
            "gradient_checkpointing_reason": why["batch"],
            "liger_kernel": bool(updates.get("liger_kernel")),
            "liger_kernel_reason": why["liger_kernel"],
            "fused_lora": bool(updates.get("fused_lora")),
            "fused_lora_reason": why["fused_lora"],
            "attention": updates.get("attention", "sdpa"), "attention_reason": why["attention"]}


def decide_all(spec, model_dir: str, batch_tokens: int | None = None) -> dict:
    """{"PROVIDER-MODE": decision} for the spec's variants (empty unless padding is "best");
    batch_tokens: the largest batch's tokens."""
    if spec.padding != "best":
        return {}
    from trainers.estimate import gpu_memory_gib

    gpu = gpu_memory_gib()
    return {f"{p}-{m}": decide(spec, model_dir, p, m, gpu, batch_tokens)
            for m in spec.modes for p in spec.providers}
