"""The "each at its best" comparison (spec.padding = "best"): the runner's per-provider
decisions (trainers/benchmark/best.py). The tiny real benchmark of it, both providers and the
plain script alike, is queued over HTTP: test_benchmark_api.py's
test_a_best_benchmark_queued_followed_and_read_over_http (one benchmark for both promises)."""

from __future__ import annotations

import importlib.util

from trainers.benchmark.best import decide
from trainers.benchmark.spec import build_spec


def test_checkpointing_goes_off_only_where_the_estimate_says_it_fits():
    spec = build_spec({"model": "llama-3.1-8b", "synthetic_weights": True, "padding": "best",
                       "batch_size": 8, "modes": ["lora16"]})
    # the worst batch, 8 rows of 2,048 tokens without checkpointing: Hugging Face with per-row
    # attention and fused LoRA layers about 85 GiB allocated with Liger's kernels, 102.5
    # without (padded with its mask and PEFT's layers it measured 131.7 on the H200), Unsloth
    # 76.1 measured: on a 90 GiB GPU only Unsloth fits without checkpointing
    hf = decide(spec, "llama-3.1-8b", "huggingface", "lora16", gpu_gib=90)
    us = decide(spec, "llama-3.1-8b", "unsloth", "lora16", gpu_gib=90)
    assert hf["gradient_checkpointing"] is True and hf["attention"] == "sdpa_per_row"
    assert us["attention"] == "sdpa"
    assert "8 x 1 accumulation with gradient checkpointing: fits" in \
        hf["gradient_checkpointing_reason"]
    assert us["gradient_checkpointing"] is False
    assert "without gradient checkpointing: fits" in us["gradient_checkpointing_reason"]
    assert hf["padding_free"] and us["padding_free"] and us["liger_kernel"] is False
    # the 8B batch-8 rows measured on the H200 make at most 9,416 tokens a batch: asked for
    # those, Hugging Face fits without checkpointing (its run with it peaked at 20.6 GiB)
    known = decide(spec, "llama-3.1-8b", "huggingface", "lora16", gpu_gib=140, batch_tokens=9416)
    assert known["gradient_checkpointing"] is False
    assert "at the rows' largest batch of 9416 tokens: fits" in \
        known["gradient_checkpointing_reason"]
    no_gpu = decide(spec, "llama-3.1-8b", "huggingface", "lora16", gpu_gib=None)
    assert no_gpu["gradient_checkpointing"] == spec.gradient_checkpointing
    assert no_gpu["liger_kernel"] is False and "no GPU" in no_gpu["liger_kernel_reason"]
    if importlib.util.find_spec("liger_kernel") is None:
        assert "pip install liger-kernel" in hf["liger_kernel_reason"]
    # the spec trains in bf16: Hugging Face's 16-bit LoRA layers are fused, as in speed mode
    assert hf["fused_lora"] is True and us["fused_lora"] is False
    assert "Unsloth" in us["fused_lora_reason"]
    qlora = decide(build_spec({**spec.model_dump(), "modes": ["qlora4"]}), "llama-3.1-8b",
                   "huggingface", "qlora4", gpu_gib=90)
    assert qlora["fused_lora"] is False and "4-bit" in qlora["fused_lora_reason"]
