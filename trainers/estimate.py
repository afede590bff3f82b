"""Peak GPU memory of a LoRA/QLoRA run, estimated before anything loads: from the config and the
model's config.json, in plain Python (the server calls it; no torch).

    peak allocated = weights + adapter state + saved activations + the working set of a layer

- weights: every parameter in the run's precision; with use_4bit the decoder's linear layers in
  NF4 with double quantisation (0.516 bytes a weight), the rest in 16 bits (Unsloth) or 32 bits
  (Hugging Face: PEFT's prepare_model_for_kbit_training upcasts them);
- adapter state: LoRA A and B of every targeted projection, kept in fp32 by PEFT, with their
  gradients and the optimizer's state (AdamW: 16 bytes a parameter);
- activations per token per decoder layer, Hugging Face eager (what autograd keeps):
  8 x hidden + 2 x kv width + 4 x intermediate values in the activation dtype, plus the two
  RMSNorms' fp32 copies (16 x hidden bytes);
  - without gradient checkpointing every layer keeps them: Hugging Face 89% of that count,
    Unsloth's fused kernels half, Liger's fused kernels (Hugging Face) 80% of Hugging Face's,
    and fused LoRA layers (`fused_lora`, 16-bit) 80% of that again: the LoRA branch reuses the
    16-bit input its base projection keeps instead of saving a float32 copy of its own;
  - with it, Hugging Face keeps each layer's input (fp32 after k-bit preparation) and recomputes
    one layer at a time; Unsloth moves the inputs to CPU memory;
- the attention mask of Hugging Face's SDPA: a float copy of it per layer, 4 bytes for each
  query x key pair the mask covers (padded: batch x seq²; padding-free, where one mask spans the
  packed micro-batch: tokens²), kept by every layer without checkpointing, one layer with it;
  none with attention sdpa_per_row (no mask) or with Unsloth;
- tokens: per_device_train_batch_size x max_seq_length, the worst batch (padded to a full-length
  row; padding-free batches are at most this);
- logits: SFT's loss goes through chunked LM-head kernels (TRL's, Unsloth's), so no [tokens x
  vocab] tensor; DPO and RLHF compute full logits (chosen and rejected), which are counted.

The working-set factors (WORKING_SET) and Unsloth's share are fitted on the H200 measurements in
benchmarks/results/ and checked against all of them by benchmarks/vram_estimate_check.py
(benchmarks/results/vram_estimate.md). What the device needs on top (the caching allocator's
reserve, the CUDA context) is DEVICE_OVERHEAD.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

GIB = 2 ** 30
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weight + 8-bit absmax per 64 + fp32 per 256 blocks
OPTIMIZER_BYTES = {"adamw_torch": 8, "adamw_torch_fused": 8, "paged_adamw_32bit": 8,
                   "adamw_8bit": 2, "paged_adamw_8bit": 2, "adafactor": 4, "sgd": 0}
# one layer's recompute and backward, in units of a Hugging Face layer's saved activations
WORKING_SET = {("huggingface", False): 1.5, ("huggingface", True): 1.75, ("unsloth", False): 1.1,
               ("unsloth", True): 1.1}
# without checkpointing, the share of layer_activation_bytes that autograd keeps:
UNSLOTH_SAVED_SHARE = 0.5  # fused kernels keep about half (8B, batch 8)
HF_SAVED_SHARE = 0.89  # Hugging Face eager (8B, per-row attention, batch 8: 0.886)
LIGER_SAVED_SHARE = 0.8  # Liger's fused norm/SwiGLU/loss, of Hugging Face's (8B, batch 4: 0.795)
# fused LoRA layers, of the above (H100: 8B engine 0.796; 3B and 1B training runs 0.77, 0.83)
FUSED_LORA_SAVED_SHARE = 0.8
MASK_BYTES = 4  # per query x key pair of SDPA's mask, per layer (8B: 3.8 GiB at 5,636 tokens)
DEVICE_OVERHEAD = (1.1, 1.0)  # the caching allocator's reserve over allocated, + the CUDA context
# Runs whose peak this estimate is known to miss, with what was measured: no number beats a wrong one
NOT_MODELLED = {
    ("unsloth", "rlhf"): "Unsloth's GRPO (its generation and log-probability passes) holds memory "
                         "this estimate does not model: 13.9 GiB peak allocated was measured where "
                         "it said 4.95 (Llama-3.2-1B shape, batch 4, H100); Hugging Face's RLHF "
                         "is estimated",
}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each decoder-layer projection."""
        h, q = self.hidden, self.heads * self.head_dim
        return {"q_proj": (h, q), "k_proj": (h, self.kv_width), "v_proj": (h, self.kv_width),
                "o_proj": (q, h), "gate_proj": (h, self.intermediate),
                "up_proj": (h, self.intermediate), "down_proj": (self.intermediate, h)}


class NotEstimable(ValueError):
    """The model's shape is unknown or not a decoder this estimate covers; says which."""


def shape_of(config: dict) -> Shape:
    need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "vocab_size")
    missing = [k for k in need if k not in config]
    if missing:
        raise NotEstimable(f"config.json has no {', '.join(missing)} (model_type "
                           f"{config.get('model_type')!r}): the estimate covers Llama-style "
                           "decoders (Llama, Qwen2, Mistral, Gemma, Phi-3)")
    try:
        heads = int(config["num_attention_heads"])
        shape = Shape(hidden=int(config["hidden_size"]),
                      intermediate=int(config["intermediate_size"]),
                      layers=int(config["num_hidden_layers"]), heads=heads,
                      kv_heads=int(config.get("num_key_value_heads") or heads),
                      head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
                      vocab=int(config["vocab_size"]),
                      tied=bool(config.get("tie_word_embeddings")))
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise NotEstimable(f"config.json has a size that is not a whole number: {exc}") from exc
    if min(shape.hidden, shape.intermediate, shape.layers, heads, shape.vocab) <= 0 \
            or max(shape.hidden, shape.intermediate, shape.vocab) > 10_000_000 \
            or shape.layers > 10_000:
        raise NotEstimable("config.json has sizes out of any model's range")
    return shape


def model_config(model_name: str) -> dict:
    """config.json of a local model directory, or the published shape of a synthetic family."""
    path = Path(model_name) / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NotEstimable(f"{path} is not readable JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise NotEstimable(f"{path} is not a JSON object")
        return config
    from trainers.benchmark.synthetic import FAMILIES

    for key, (hub_id, values) in FAMILIES.items():
        if model_name.lower() in (key, hub_id.lower()):
            return dict(values)
    raise NotEstimable(f"no config.json for '{model_name}' on this machine (a hub model is read "
                       "when it loads): download it first, or point model_name at its folder")


def lora_parameters(shape: Shape, rank: int, targets) -> int:
    projections = shape.projections()
    names = PROJECTIONS if targets == "auto" else [t for t in targets if t in projections]
    return shape.layers * sum(rank * sum(projections[n]) for n in names)


def weight_bytes(shape: Shape, four_bit: bool, provider: str, dtype_bytes: int) -> float:
    linear = shape.layers * sum(i * o for i, o in shape.projections().values())
    rest = shape.vocab * shape.hidden * (1 if shape.tied else 2) \
        + shape.hidden * (2 * shape.layers + 1)  # embeddings, LM head, norms
    if not four_bit:
        return (linear + rest) * dtype_bytes
    rest_bytes = 2 if provider == "unsloth" else 4  # PEFT's k-bit preparation upcasts to fp32
    return linear * NF4_BYTES + rest * rest_bytes


def layer_activation_bytes(shape: Shape, tokens: int, act_bytes: int) -> float:
    """What one Hugging Face decoder layer keeps for the backward pass."""
    values = 8 * shape.hidden + 2 * shape.kv_width + 4 * shape.intermediate
    return tokens * (values * act_bytes + 16 * shape.hidden)


def mask_bytes(provider: str, attention: str, padding_free: bool, batch: int, seq: int) -> float:
    """One layer's float copy of Hugging Face SDPA's attention mask (none without a mask)."""
    if provider != "huggingface" or attention == "sdpa_per_row":
        return 0.0
    pairs = (batch * seq) ** 2 if padding_free else batch * seq ** 2
    return MASK_BYTES * pairs


def estimate_shape(shape: Shape, *, provider: str, strategy: str, four_bit: bool, batch: int,
                   seq: int, checkpointing: bool, dtype_bytes: int, lora_r: int, targets,
                   optimizer: str, liger: bool = False, attention: str = "sdpa",
                   padding_free: bool = False, fused_lora: bool = False) -> dict:
    """Components and total in GiB for one shape and set of settings (padding_free with
    batch 1 and seq = the tokens of a packed micro-batch)."""
    tokens = batch * seq
    layer = layer_activation_bytes(shape, tokens, dtype_bytes)
    mask = mask_bytes(provider, attention, padding_free, batch, seq)
    if checkpointing:
        resid_bytes = 4 if four_bit and provider == "huggingface" else dtype_bytes
        saved = 0.0 if provider == "unsloth" else shape.layers * tokens * shape.hidden * resid_bytes
        working = WORKING_SET[(provider, four_bit)] * layer
    else:
        share = UNSLOTH_SAVED_SHARE if provider == "unsloth" else \
            HF_SAVED_SHARE * (LIGER_SAVED_SHARE if liger else 1.0) * \
            (FUSED_LORA_SAVED_SHARE if fused_lora and dtype_bytes == 2 else 1.0)
        saved, working = shape.layers * share * layer, 0.0
    lora = lora_parameters(shape, lora_r, targets)
    parts = {
        "weights": weight_bytes(shape, four_bit, provider, dtype_bytes),
        "adapter_and_optimizer": lora * (8 + OPTIMIZER_BYTES.get(optimizer, 8)),
        "saved_activations": saved, "layer_working_set": working,
        "attention_mask": mask * (1 if checkpointing else shape.layers),
        # DPO/RLHF: full logits of chosen and rejected rows, bf16 and their fp32 log-softmax
        "logits": 2 * tokens * shape.vocab * (dtype_bytes + 4) if strategy in ("dpo", "rlhf")
        else 0.0,
    }
    total = sum(parts.values())
    reserve, context = DEVICE_OVERHEAD
    return {"components_gib": {k: round(v / GIB, 3) for k, v in parts.items()},
            "peak_allocated_gib": round(total / GIB, 2),
            "device_gib": round(total * reserve / GIB + context, 2),
            "tokens_per_batch": tokens, "lora_parameters": lora}


def settings_of(cfg) -> dict:
    """The estimate's inputs from a TrainConfig."""
    return {"provider": cfg.provider, "strategy": cfg.strategy, "four_bit": cfg.use_4bit,
            "batch": cfg.per_device_train_batch_size, "seq": cfg.max_seq_length,
            "checkpointing": cfg.gradient_checkpointing,
            "dtype_bytes": 2 if (cfg.bf16 or cfg.fp16) else 4, "lora_r": cfg.lora_r,
            "targets": cfg.target_modules, "optimizer": cfg.optim, "liger": cfg.liger_kernel,
            "attention": cfg.attention, "padding_free": cfg.padding_free,
            "fused_lora": cfg.fused_lora}


def largest_batch(shape: Shape, settings: dict, gpu_gib: float, limit: int = 256) -> int:
    """The largest per-device batch whose device estimate fits in gpu_gib (0: none)."""
    best = 0
    for batch in range(1, limit + 1):
        if estimate_shape(shape, **{**settings, "batch": batch})["device_gib"] > gpu_gib:
            break
        best = batch
    return best


def estimate(cfg, gpu_gib: float | None = None, batch_tokens: int | None = None) -> dict:
    """The estimate for a TrainConfig, with a verdict when the GPU's memory is known.

    batch_tokens: where the rows are known and batches are padding-free (the benchmark), the
    most tokens one micro-batch holds; the estimate is then for that batch, not the worst case
    of per_device_train_batch_size rows of max_seq_length tokens."""
    if cfg.max_seq_length <= 0:
        return {"available": False, "reason": "max_seq_length is not fixed (-1): the estimate "
                                              "needs the longest row a batch can hold"}
    if (cfg.provider, cfg.strategy) in NOT_MODELLED:
        return {"available": False, "reason": NOT_MODELLED[(cfg.provider, cfg.strategy)]}
    try:
        shape = shape_of(model_config(cfg.model_name))
    except NotEstimable as exc:
        return {"available": False, "reason": str(exc)}
    settings = settings_of(cfg)
    asked = {**settings, "batch": 1, "seq": batch_tokens} if batch_tokens else settings
    result = {"available": True, **estimate_shape(shape, **asked), "shape": asdict(shape),
              "method": "docs/benchmarking.md#vram-estimate", "gpu_gib": gpu_gib}
    if gpu_gib is None:
        result.update(fits=None, verdict="no GPU found here: the estimate is for a CUDA GPU")
        return result
    if result["device_gib"] <= gpu_gib:
        result.update(fits=True, verdict=f"fits: about {result['device_gib']:.1f} of "
                                         f"{gpu_gib:.0f} GiB (peak allocated "
                                         f"{result['peak_allocated_gib']:.1f} GiB)")
        return result
    tight = result["peak_allocated_gib"] <= gpu_gib
    result["fits"] = False
    fixes = []
    if not cfg.gradient_checkpointing:
        with_gc = estimate_shape(shape, **{**asked, "checkpointing": True})
        fixes.append(f"gradient_checkpointing: true (about {with_gc['device_gib']:.1f} GiB)")
    if result["components_gib"]["attention_mask"] and cfg.padding_free:
        per_row = estimate_shape(shape, **{**asked, "attention": "sdpa_per_row"})
        fixes.append(f"attention: sdpa_per_row (no mask; about {per_row['device_gib']:.1f} GiB)")
    batch = largest_batch(shape, settings, gpu_gib)
    if batch:
        fixes.append(f"per_device_train_batch_size: {batch} (with gradient_accumulation_steps "
                     "to keep the effective batch)")
    if not cfg.use_4bit:
        fixes.append("use_4bit: true (QLoRA)")
    fixes.append("a lower max_seq_length")
    result["verdict"] = (
        ("tight: may run out of memory" if tight else "predicted not to fit")
        + f": about {result['device_gib']:.1f} GiB needed of {gpu_gib:.0f} GiB (peak allocated "
        f"{result['peak_allocated_gib']:.1f} GiB). Try " + "; or ".join(fixes))
    result["fixes"] = fixes
    return result


@functools.lru_cache(maxsize=1)
def gpu_memory_gib() -> float | None:
    """The smallest NVIDIA GPU's memory on this machine (nvidia-smi; no torch), or None."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,"
                              "nounits"], capture_output=True, text=True, timeout=10).stdout
        sizes = [float(line) / 1024 for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return round(min(sizes), 1) if sizes else None
