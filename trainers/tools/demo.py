"""A small random-init Llama-architecture model with a tokenizer trained on the bundled data.

It lets everything (training, the dashboard, the tests) work with no network: the weights are
random, so what it generates is nonsense, but loss, adapters, events and timings are real.
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
SAMPLE_SFT = SAMPLE_DIR / "instructions.jsonl"
SAMPLE_PREFERENCES = SAMPLE_DIR / "preferences.jsonl"
SAMPLE_SUMMARIES = SAMPLE_DIR / "summaries.jsonl"

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Small enough for CPU tests, big enough that loss visibly falls and Unsloth patches it.
DEMO_SHAPE = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)


def _sample_texts() -> list[str]:
    texts = []
    for path in (SAMPLE_SFT, SAMPLE_PREFERENCES, SAMPLE_SUMMARIES):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            texts.extend(str(v) for v in json.loads(line).values())
    return texts


def build_tokenizer(vocab_size: int = 2048):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_sample_texts(), trainer=trainer)
    from tokenizers import processors
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", model_max_length=2048)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_demo_model(out_dir: str | Path, seed: int = 0, **shape) -> Path:
    """Write a tokenizer and a random-init LlamaForCausalLM to out_dir; return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True, **{**DEMO_SHAPE, **shape})
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "MODELFORGE_DEMO.txt").write_text(
        "Random-init demo model written by `modelforge demo-model`: weights are random.\n")
    return out
