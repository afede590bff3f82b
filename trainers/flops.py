"""Model FLOPs of a training step, and the GPU peak they are compared with (MFU), counted as
NVIDIA NeMo counts them (LoRA: about 4 x parameters per token plus attention), so the numbers
compare with its published ones. The benchmark and a training run's progress both use it.

Counted from the loaded model itself (every linear layer's in x out) and the rows' true lengths:

  per token, frozen base linear layers:   4 * MACs   forward (2) + input gradient (2); no weight
                                                     gradient for frozen weights
  per token, trainable linear layers:     6 * MACs   forward, input gradient, weight gradient
                                                     (LoRA A and B; every layer in a full tune)
  per row of L tokens, attention:         12 * layers * heads * head_dim * L(L+1)/2
                                                     Q.K^T and A.V, forward + backward (2x), the
                                                     causal half only
The LM head counts as a linear layer (also when tied to the embeddings). Not counted: the
recomputation of gradient checkpointing, 4-bit dequantisation, norms, activations, softmax and
padding tokens: they are work the GPU does, not model FLOPs, so they lower MFU.
"""

from __future__ import annotations

import math
import os
import re

FORMULA = ("model FLOPs/step = sum over non-padding tokens of (4 x frozen linear MACs + 6 x "
           "trainable linear MACs) + sum over rows of 12 x layers x heads x head_dim x L(L+1)/2; "
           "gradient-checkpointing recompute, 4-bit dequantisation, norms/softmax and padding "
           "not counted")

# Dense bf16 tensor-core peaks (no sparsity) in TFLOP/s, from the vendors' datasheets.
# Most specific name first: the first pattern found in the GPU's name wins.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"H200|H100|H800|GH200", 989.0),
    (r"A100|A800", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
]

# A training run's peak for a GPU the table lacks (or to compare with another figure).
PEAK_ENV = "MODELFORGE_PEAK_TFLOPS"


def peak_tflops(device_name: str | None) -> float | None:
    for pattern, value in PEAK_BF16_TFLOPS:
        if device_name and re.search(pattern, device_name):
            return value
    return None


def run_peak(gpu_name: str | None, environ=os.environ) -> dict:
    """What a training run's MFU is counted against: peak_tflops and peak_source, or
    mfu_unavailable saying why there is no peak (then no MFU, rather than a made-up one)."""
    given = environ.get(PEAK_ENV, "").strip()
    if given:
        try:
            value = float(given)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            return {"peak_tflops": value, "peak_source": PEAK_ENV, "mfu_unavailable": None}
        return _no_peak(f"{PEAK_ENV}={given!r} is not a positive number of TFLOP/s")
    if gpu_name is None:
        return _no_peak(f"no GPU: MFU is a share of a GPU's peak ({PEAK_ENV} gives one)")
    value = peak_tflops(gpu_name)
    if value is None:
        return _no_peak(f"no peak known for {gpu_name!r}: set {PEAK_ENV} to its dense bf16 "
                        "TFLOP/s")
    return {"peak_tflops": value, "peak_source": f"{gpu_name} bf16 dense",
            "mfu_unavailable": None}


def _no_peak(reason: str) -> dict:
    return {"peak_tflops": None, "peak_source": None, "mfu_unavailable": reason}


def linear_macs(model) -> dict:
    """Multiply-accumulates per token of the frozen and the trainable linear layers."""
    import torch

    frozen = trainable = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        macs = module.in_features * module.out_features
        if module.weight.requires_grad:
            trainable += macs
        else:
            frozen += macs
    return {"frozen": frozen, "trainable": trainable}


def attention_width(config) -> tuple[int, int]:
    """(layers, heads x head_dim) from a transformers config."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, heads * head_dim


def step_flops(row_lengths: list[int], macs: dict, layers: int, width: int,
               causal: bool = True) -> float:
    """Model FLOPs of one training step over rows of the given (non-padding) lengths."""
    tokens = sum(row_lengths)
    linear = tokens * (4 * macs["frozen"] + 6 * macs["trainable"])
    pairs = sum(n * (n + 1) // 2 if causal else n * n for n in row_lengths)
    return float(linear + 12 * layers * width * pairs)


def flops_per_token(row_lengths: list[int], macs: dict, layers: int, width: int) -> float:
    """Model FLOPs per token, on average over rows of these lengths (token-weighted, so
    tokens x this = the rows' step_flops)."""
    return step_flops(row_lengths, macs, layers, width) / sum(row_lengths)


def mfu(flops_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation, 0..1, or None without a known peak."""
    return flops_per_s / (peak * 1e12) if peak else None
