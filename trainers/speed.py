"""Speed mode: the fastest settings that fit the GPU a run gets, decided when it starts.

One decision for training runs (`speed_mode: true`, the `speed` preset) and for the benchmark's
"each at its best" comparison (trainers/benchmark/best.py), so both mean the same thing:

- padding-free batches (sft/qlora without packing): no compute on padding tokens;
- no gradient checkpointing where the VRAM estimate (trainers/estimate.py) says the run fits
  without it, and the largest micro-batch that fits, with gradient accumulation keeping the
  effective batch (per_device_train_batch_size x gradient_accumulation_steps), so what is
  learned does not change; a benchmark keeps its batch (keep_batch);
- per-row attention for Hugging Face's padding-free batches (`attention: sdpa_per_row`,
  trainers/train/attention.py): each packed row attends to itself alone (on an Ampere or
  newer GPU in one varlen flash-attention call per layer) instead of through a mask spanning
  the whole micro-batch, whose cost and memory grow with the square of its tokens (8B on the
  H200: +42% tokens/s, 4 GiB less; Unsloth keeps rows apart itself);
- Hugging Face's LoRA layers fused under mixed precision (`fused_lora`,
  trainers/train/fused_lora.py): no float32 round trip of their input, the LoRA branch added in
  its up-projection's GEMM (measured in docs/benchmarking.md);
- Liger's fused kernels for Hugging Face where liger-kernel is installed and there is a GPU
  (Unsloth has its own);
- cuDNN's SDPA attention off on a GPU: with torch 2.11 on an H200 it stalls ~2 s at new batch
  shapes and ran 20% slower (docs/benchmarking.md, "Slow Hugging Face steps");
- PyTorch's allocator with expandable segments for Hugging Face, unless the operator set one:
  with batches that change length every step the default allocator holds segments it cannot
  reuse (8B on an H100: 42.3 GiB reserved for 37.4 allocated; with expandable segments 37.7
  GiB, and 2.7% faster). Unsloth sets the same for its own process.
The attention and kernels are decided first, so the VRAM estimate that picks the batch counts
them. torch.compile is not switched on: on torch 2.11 with TRL 1.15 it failed with per-row
attention (as a loop of SDPA calls) and compiled for minutes on the masked path
(benchmarks/results/torch_compile_huggingface/).
The batch is decided twice in a training run: at start with every row taken as max_seq_length
long, then again once the rows are tokenized (fit_to_rows), before the model loads. Every
decision is returned with its reason; the worker puts them in the `started` event.
"""

from __future__ import annotations

import importlib.util
import os

BATCH_DECISION = "batch and checkpointing: "  # how the batch decision's sentence starts
ALLOCATOR_ENV = {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}
ALLOCATOR_NAMES = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")  # the second: older torch


def allocator_env(provider: str, environ=os.environ) -> dict:
    """The allocator setting speed mode adds to a Hugging Face run's environment: none where
    the operator chose one (either name; the one speed mode sets counts as its own). Unsloth
    sets its own."""
    chosen = {n: environ[n] for n in ALLOCATOR_NAMES if n in environ}
    if provider != "huggingface" or (chosen and chosen != ALLOCATOR_ENV):
        return {}
    return dict(ALLOCATOR_ENV)


def allocator_decision(provider: str, environ=os.environ) -> str:
    if provider != "huggingface":
        return "PyTorch allocator: as Unsloth sets it (expandable segments unless set)"
    if allocator_env(provider, environ):
        return "PyTorch allocator: expandable segments (PYTORCH_ALLOC_CONF)"
    chosen = [f"{n}={environ[n]}" for n in ALLOCATOR_NAMES if n in environ]
    return f"PyTorch allocator: as set ({', '.join(chosen)})"


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def _divisors_descending(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def _batch_and_checkpointing(cfg, gpu_gib: float | None, keep_batch: bool,
                             batch_tokens: int | None = None,
                             row_lengths: list[int] | None = None) -> tuple[dict, str]:
    """(updates, reason): the largest micro-batch that fits, without checkpointing if possible.
    batch_tokens (with keep_batch): the largest batch's tokens, where the batches are known;
    row_lengths (padding-free training rows): a micro-batch of m rows holds at most the m
    longest rows' tokens. Without either, every row is taken as max_seq_length long."""
    from trainers.estimate import estimate

    if gpu_gib is None:
        return {}, "no GPU found: batch and gradient checkpointing kept as set"
    effective = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    micro_batches = [cfg.per_device_train_batch_size] if keep_batch else \
        _divisors_descending(effective)
    longest = sorted(row_lengths, reverse=True) if row_lengths and cfg.padding_free else None
    last = None
    for checkpointing in (False, True):
        for micro in micro_batches:
            tokens = batch_tokens if keep_batch else \
                (sum(longest[:micro]) if longest else None)
            trial = cfg.model_copy(update={"per_device_train_batch_size": micro,
                                           "gradient_accumulation_steps": effective // micro,
                                           "gradient_checkpointing": checkpointing})
            verdict = estimate(trial, gpu_gib, tokens)
            if not verdict["available"]:
                return {}, f"kept as set: {verdict['reason']}"
            last = verdict
            if verdict["fits"]:
                updates = {"per_device_train_batch_size": micro,
                           "gradient_accumulation_steps": effective // micro,
                           "gradient_checkpointing": checkpointing}
                how = "without" if not checkpointing else "with"
                at = "" if not tokens else (f", at the rows' largest batch of {tokens} tokens"
                                            if keep_batch else
                                            f", at its {micro} longest rows' {tokens} tokens")
                return updates, (f"micro-batch {micro} x {effective // micro} accumulation "
                                 f"{how} gradient checkpointing{at}: {verdict['verdict']}")
    return {}, f"kept as set: nothing tried fits ({last['verdict'] if last else 'no estimate'})"


def _model_config(cfg) -> dict:
    """From the local config.json (or a synthetic family's shape), else as the worker will load
    it (transformers' AutoConfig, which fetches a hub model's config.json); {} for a model whose
    config cannot be read: its load fails later with its own error."""
    from trainers.estimate import NotEstimable, model_config

    try:
        return model_config(cfg.model_name)
    except NotEstimable:
        pass
    try:
        from trainers.train.providers.base import load_model_config

        return load_model_config(cfg.model_name, cfg.trust_remote_code).to_dict()
    except Exception:  # noqa: BLE001 - the model load reports it, with its fix
        return {}


def _attention_per_row_cannot_do(config: dict, max_seq_length: int) -> str | None:
    """What of the model's attention sdpa_per_row leaves out (it is plain causal SDPA per row),
    or None. Seen on an H100: Gemma 2's sliding-window layers refuse it mid-run. A window at
    least as long as the longest row masks nothing, so it does not count."""
    if config.get("is_encoder_decoder"):
        return "an encoder-decoder model: per-row attention is for causal decoders"
    window = config.get("sliding_window")
    if window and config.get("use_sliding_window") is not False \
            and (max_seq_length <= 0 or max_seq_length > window):
        return (f"a sliding-window model ({config.get('model_type')}, window {window} < "
                f"max_seq_length {max_seq_length}): per-row attention does not implement the "
                f"window (a max_seq_length of {window} or less would not need it)")
    if config.get("attn_logit_softcapping"):
        return (f"attention logit soft-capping ({config.get('model_type')}): per-row attention "
                "does not implement it")
    return None


def _per_row_attention(cfg, padding_free: bool) -> tuple[bool, str]:
    """(switch attention to sdpa_per_row?, why): Hugging Face decoders on padding-free batches."""
    if cfg.provider != "huggingface":
        return False, "Unsloth keeps the packed rows apart itself"
    if not padding_free:
        return False, "no padding-free batches: a padded batch needs its mask"
    cannot = _attention_per_row_cannot_do(_model_config(cfg), cfg.max_seq_length)
    if cannot:
        return False, cannot
    return True, "padding-free batches"


def decide(cfg, gpu_gib: float | None, keep_batch: bool = False,
           batch_tokens: int | None = None) -> dict:
    """The speed settings for cfg on a GPU of gpu_gib (None: no GPU), and why. A benchmark
    keeps its batch and knows its rows: batch_tokens is its largest batch's token count.

    Returns {"updates": TrainConfig fields to change, "cudnn_attention": bool,
    "reasons": {"padding_free" | "attention" | "batch" | "liger_kernel" |
                "fused_lora": why},
    "decisions": each as a sentence, for the run's events}.
    """
    updates, reasons = {}, {}
    if cfg.strategy in ("sft", "qlora") and not cfg.packing:
        updates["padding_free"] = True
    else:
        reasons["padding_free"] = ("packing is on" if cfg.packing else
                                   f"{cfg.strategy} trains on preference pairs")
    per_row, reasons["attention"] = _per_row_attention(cfg, updates.get("padding_free", False))
    if per_row:
        updates["attention"] = "sdpa_per_row"
    if cfg.provider != "huggingface":
        reasons["fused_lora"] = "Unsloth runs its own LoRA kernels"
    elif not (cfg.bf16 or cfg.fp16):
        reasons["fused_lora"] = "no mixed precision (bf16 or fp16)"
    elif cfg.use_4bit:
        reasons["fused_lora"] = "4-bit base layers: PEFT's bitsandbytes LoRA layers are not fused"
    else:
        updates["fused_lora"] = True
        reasons["fused_lora"] = "16-bit LoRA under mixed precision"
    if cfg.provider != "huggingface":
        reasons["liger_kernel"] = "Unsloth uses its own fused kernels"
    elif gpu_gib is None:
        reasons["liger_kernel"] = "no GPU: Liger's kernels are Triton GPU kernels"
    elif not liger_installed():
        reasons["liger_kernel"] = "liger-kernel is not installed: pip install liger-kernel"
    else:
        updates["liger_kernel"] = True
        reasons["liger_kernel"] = "installed"
    fitted, reasons["batch"] = _batch_and_checkpointing(cfg.model_copy(update=updates), gpu_gib,
                                                        keep_batch, batch_tokens)
    updates.update(fitted)

    def state(field: str) -> str:  # what the run gets: speed mode's update, or as set
        if updates.get(field):
            return "on"
        return "on (as set)" if getattr(cfg, field) else f"off ({reasons[field]})"

    decisions = [f"padding-free batches: {state('padding_free')}",
                 "attention: " + ("sdpa_per_row (each packed row attends to itself alone, no mask)"
                                  if per_row else f"as set ({reasons['attention']})"),
                 BATCH_DECISION + reasons["batch"],
                 f"Liger kernels: {state('liger_kernel')}",
                 "LoRA layers fused (input kept in the model's dtype, the LoRA branch added "
                 f"in its GEMM): {state('fused_lora')}",
                 "cuDNN SDPA attention: " + ("off" if gpu_gib is not None else
                                             "not used (no GPU)"),
                 allocator_decision(cfg.provider) if gpu_gib is not None else
                 "PyTorch allocator: not used (no GPU)"]
    return {"updates": updates, "cudnn_attention": False, "reasons": reasons,
            "decisions": decisions}


def fit_to_rows(cfg, row_lengths: list[int], decisions: list[str],
                gpu_gib: float | None) -> tuple:
    """(cfg, decisions) with the batch decided again once the training rows are tokenized:
    a padding-free micro-batch holds its rows' tokens, usually far fewer than batch x
    max_seq_length, which is all `apply` can assume before the data is read (and with
    max_seq_length -1, inferred from the rows, it could not estimate at all)."""
    if gpu_gib is None or not cfg.padding_free:
        return cfg, decisions
    updates, reason = _batch_and_checkpointing(cfg, gpu_gib, keep_batch=False,
                                               row_lengths=row_lengths)
    decisions = [BATCH_DECISION + reason if d.startswith(BATCH_DECISION) else d
                 for d in decisions]
    return cfg.model_copy(update=updates), decisions


def estimate_as_run(cfg, gpu_gib: float | None) -> dict:
    """The VRAM estimate of what a run of cfg will train with: with speed_mode, of speed mode's
    settings for a GPU of gpu_gib (as decided at start, before the rows are read), with its
    decisions under "speed_mode"; without it, of cfg as written."""
    from trainers.estimate import estimate

    if not cfg.speed_mode:
        return estimate(cfg, gpu_gib)
    plan = decide(cfg, gpu_gib)
    return {**estimate(cfg.model_copy(update=plan["updates"]), gpu_gib),
            "speed_mode": plan["decisions"]}


def apply(cfg) -> tuple:
    """(cfg with the speed settings, decisions) for a run starting on this machine's GPU."""
    from trainers.estimate import gpu_memory_gib

    os.environ.update(allocator_env(cfg.provider))  # before the first CUDA call fixes it
    gpu = gpu_memory_gib()
    plan = decide(cfg, gpu)
    if gpu is not None:
        import torch

        torch.backends.cuda.enable_cudnn_sdp(plan["cudnn_attention"])
    return cfg.model_copy(update=plan["updates"]), plan["decisions"]
