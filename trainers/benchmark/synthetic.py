"""Synthetic weights: random-init models built from public config.json values, no download.

Speed and memory depend on the architecture (layer sizes, heads, vocabulary), not on the weight
values, so a random-init model with the real shape trains at the real speed in the real memory.
The loss does depend on the weights: with random weights it starts near ln(vocab_size), and the
report says so. Every result of such a model is labelled "synthetic weights".

The tokenizer is the bundled demo tokenizer (ids 0-2047, valid for every vocabulary here);
tokens are tokens for speed, and its token counts are what the numbers are per.

  python -m trainers.benchmark.synthetic FAMILY OUT_DIR      build one (on the GPU when present)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainers.errors import ConfigError

MARKER = "MODELFORGE_SYNTHETIC.json"

_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}

# family key -> (hub id the values come from, config.json values that set the shape)
FAMILIES: dict[str, tuple[str, dict]] = {
    "llama-3.2-1b": ("meta-llama/Llama-3.2-1B", dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
        tie_word_embeddings=True, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE,
        rms_norm_eps=1e-5, max_position_embeddings=131072, hidden_act="silu")),
    "llama-3.2-3b": ("meta-llama/Llama-3.2-3B", dict(
        model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
        num_attention_heads=24, num_key_value_heads=8, head_dim=128, vocab_size=128256,
        tie_word_embeddings=True, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE,
        rms_norm_eps=1e-5, max_position_embeddings=131072, hidden_act="silu")),
    "llama-3.1-8b": ("meta-llama/Llama-3.1-8B", dict(
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
        tie_word_embeddings=False, rope_theta=500000.0,
        rope_scaling={**_LLAMA3_ROPE, "factor": 8.0}, rms_norm_eps=1e-5,
        max_position_embeddings=131072, hidden_act="silu")),
    "qwen2.5-1.5b": ("Qwen/Qwen2.5-1.5B", dict(
        model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
        tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=131072, max_window_layers=21, use_sliding_window=False,
        hidden_act="silu")),
    "qwen2.5-7b": ("Qwen/Qwen2.5-7B", dict(
        model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
        tie_word_embeddings=False, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=131072, max_window_layers=28, use_sliding_window=False,
        hidden_act="silu")),
    "mistral-7b": ("mistralai/Mistral-7B-v0.3", dict(
        model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=32768,
        tie_word_embeddings=False, rope_theta=1000000.0, rms_norm_eps=1e-5,
        max_position_embeddings=32768, sliding_window=None, hidden_act="silu")),
    "gemma-2-2b": ("google/gemma-2-2b", dict(
        model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000,
        tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-6,
        max_position_embeddings=8192, query_pre_attn_scalar=256, sliding_window=4096,
        final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
        hidden_activation="gelu_pytorch_tanh")),
    "phi-3-mini": ("microsoft/Phi-3-mini-4k-instruct", dict(
        model_type="phi3", hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, vocab_size=32064,
        tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-5,
        max_position_embeddings=4096, original_max_position_embeddings=4096,
        sliding_window=2047, hidden_act="silu", resid_pdrop=0.0, embd_pdrop=0.0,
        attention_dropout=0.0)),
}


def resolve_family(name: str) -> str:
    """A family key from its key or its hub id, any case; ConfigError listing them otherwise."""
    wanted = name.strip().lower()
    for key, (hub_id, _) in FAMILIES.items():
        if wanted in (key, hub_id.lower(), hub_id.lower().split("/")[-1]):
            return key
    choices = ", ".join(f"{k} ({hub})" for k, (hub, _) in FAMILIES.items())
    raise ConfigError([{"field": "model", "message": f"'{name}' is not an architecture with "
                        f"synthetic weights: choose one of {choices}"}])


def family_config(key: str, tokenizer=None, **overrides):
    """The transformers config of a family (special token ids from the tokenizer)."""
    from transformers import AutoConfig

    values = dict(FAMILIES[key][1])
    model_type = values.pop("model_type")
    if tokenizer is not None:
        values.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    values.update(overrides)
    return AutoConfig.for_model(model_type, **values)


def build_synthetic(key: str, out_dir: str | Path, seed: int = 42, **overrides) -> Path:
    """Write a random-init model in bf16 (made on the GPU when there is one) and the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainers.tools.demo import build_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = family_config(key, tokenizer, **overrides)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker = {"synthetic_weights": True, "family": key, "values_from": FAMILIES[key][0],
              "seed": seed, "overrides": overrides, "built_on": device,
              "parameters": sum(p.numel() for p in model.parameters()),
              "note": "random-init weights: speed and memory are the architecture's, the loss "
                      "is not a trained model's"}
    (out / MARKER).write_text(json.dumps(marker, indent=2))
    return out


def synthetic_info(model_dir: str | Path) -> dict | None:
    """The marker of a synthetic model directory, or None for real weights."""
    path = Path(model_dir) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print("usage: python -m trainers.benchmark.synthetic FAMILY OUT_DIR [SEED]",
              file=sys.stderr)
        return 2
    seed = int(argv[2]) if len(argv) == 3 else 42
    out = build_synthetic(resolve_family(argv[0]), argv[1], seed=seed)
    print(json.dumps(synthetic_info(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
