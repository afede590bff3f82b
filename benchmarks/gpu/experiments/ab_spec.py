"""The benchmark spec of the slow-step A/B experiments (page_cache.sh, jit_cache.sh): one
Hugging Face lora16 variant per process, padded, with the engine as it was before the fixes
these experiments led to (cuDNN's attention as torch picks it, compile caches shared).

    python benchmarks/gpu/experiments/ab_spec.py NAME INVOCATION WARM_LIBRARIES > RUN_DIR/config.json

SHAPE (default llama-3.2-1b, synthetic weights; or a model directory), BATCH, STEPS,
MIN_TOKENS and DATA come from the environment (the CPU try-out uses a tiny model).
"""

import json
import os
import sys

name, invocation, warm = sys.argv[1:4]
shape = os.environ.get("SHAPE", "llama-3.2-1b")
print(json.dumps({
    "model": shape, "synthetic_weights": not os.path.isdir(shape), "modes": ["lora16"],
    "providers": ["huggingface"], "max_seq_length": 2048,
    "batch_size": int(os.environ.get("BATCH", 8)), "steps": int(os.environ.get("STEPS", 20)),
    "warmup_steps": 3, "repeats": 1, "padding": "padded", "variant_timeout_s": 200,
    "min_example_tokens": int(os.environ.get("MIN_TOKENS", 680)),
    "dataset": os.path.abspath(os.environ.get("DATA",
                                              ".gpu/data/t0_mix_prompt_completion.jsonl")),
    "warm_libraries": warm == "true", "cudnn_attention": True, "fresh_compile_caches": False,
    "name": name, "invocation": invocation}, indent=2))
