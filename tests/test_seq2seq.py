"""Encoder-decoder models (BART here) train for summarization through the huggingface provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers.config import build_config
from trainers.tools.demo import SAMPLE_SUMMARIES
from trainers.events import read_events
from trainers.runs.registry import RunRegistry
from trainers.runs.process import launch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory) -> Path:
    """A random-init BART with the demo tokenizer."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    from trainers.tools.demo import build_tokenizer

    out = tmp_path_factory.mktemp("tiny-bart")
    tokenizer = build_tokenizer()
    config = BartConfig(vocab_size=len(tokenizer), d_model=64, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=4, decoder_attention_heads=4,
                        encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        decoder_start_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def train(data_dir, config: dict) -> list[dict]:
    registry = RunRegistry(data_dir)
    run = registry.create(build_config(config))
    proc = launch(Path(run["run_dir"]))
    proc.wait(timeout=600)
    registry.finish_from_events(run["id"], proc.returncode)
    return read_events(run["run_dir"])


def test_bart_trains_on_summaries(tmp_path, tiny_bart):
    events = train(tmp_path, {
        "model_name": str(tiny_bart), "task": "summarization", "dataset": str(SAMPLE_SUMMARIES),
        "max_seq_length": 128, "max_steps": 12, "per_device_train_batch_size": 4,
        "learning_rate": 5e-3, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0})
    assert events[-1]["type"] == "finished", events[-1]
    started = events[0]
    assert started["seq2seq"] is True and started["architecture"] == "BartForConditionalGeneration"
    assert started["data_format"] == "summarization"
    losses = [e["loss"] for e in events if e["type"] == "progress" and e["loss"] is not None]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    adapter = Path(events[-1]["adapter_dir"])
    import json

    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == \
        "SEQ_2_SEQ_LM"


def test_encoder_decoder_refuses_preference_strategies(tmp_path, tiny_bart):
    from trainers.tools.demo import SAMPLE_PREFERENCES

    events = train(tmp_path, {"model_name": str(tiny_bart), "strategy": "dpo",
                              "dataset": str(SAMPLE_PREFERENCES), "max_seq_length": 128,
                              "max_prompt_length": 64})
    assert [e["type"] for e in events] == ["failed"]
    assert "needs a decoder-only" in events[0]["message"]


def test_plain_text_is_refused_for_encoder_decoders(tmp_path, tiny_bart):
    text = tmp_path / "text.jsonl"
    text.write_text("".join('{"text": "some words %d"}\n' % i for i in range(8)))
    events = train(tmp_path, {"model_name": str(tiny_bart), "dataset": str(text),
                              "max_seq_length": 64})
    assert [e["type"] for e in events] == ["failed"]
    assert "need an input and a target" in events[0]["message"]
