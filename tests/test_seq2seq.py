"""Encoder-decoder models (BART here) train for summarization through the huggingface provider."""

from __future__ import annotations

import json
import subprocess
import sys
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
    return train_run(data_dir, config)[1]


def train_run(data_dir, config: dict) -> tuple[Path, list[dict]]:
    registry = RunRegistry(data_dir)
    run = registry.create(build_config(config))
    proc = launch(Path(run["run_dir"]))
    proc.wait(timeout=600)
    registry.finish_from_events(run["id"], proc.returncode)
    return Path(run["run_dir"]), read_events(run["run_dir"])


@pytest.fixture(scope="module")
def bart_run(tmp_path_factory, tiny_bart) -> tuple[Path, list[dict]]:
    """A finished summarization run on the tiny BART."""
    return train_run(tmp_path_factory.mktemp("bart-run"), {
        "model_name": str(tiny_bart), "task": "summarization", "dataset": str(SAMPLE_SUMMARIES),
        "max_seq_length": 128, "max_steps": 12, "per_device_train_batch_size": 4,
        "learning_rate": 5e-3, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0})


def test_bart_trains_on_summaries(bart_run):
    _, events = bart_run
    assert events[-1]["type"] == "finished", events[-1]
    started = events[0]
    assert started["seq2seq"] is True and started["architecture"] == "BartForConditionalGeneration"
    assert started["data_format"] == "summarization"
    losses = [e["loss"] for e in events if e["type"] == "progress" and e["loss"] is not None]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    adapter = Path(events[-1]["adapter_dir"])
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == \
        "SEQ_2_SEQ_LM"


def tool(module: str, *args: str, stdin: str = "") -> list[dict]:
    """Run a one-shot tool as the dashboard does; its JSON lines."""
    result = subprocess.run([sys.executable, "-m", module, *args], input=stdin,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_bart_run_plays_and_exports_merged(bart_run, tiny_bart, tmp_path):
    """A seq2seq run reloads as a seq2seq model (not AutoModelForCausalLM) in both tools."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from trainers.tools import playground

    run_dir, events = bart_run
    assert events[-1]["type"] == "finished", events[-1]
    # the start of a training document (a whole one is longer than this BART's 512 positions)
    prompt = json.loads(SAMPLE_SUMMARIES.read_text().splitlines()[0])["document"][:400]
    # sampled (seed 0): greedy decoding of a 12-step tiny model ends at once with </s>
    played = tool("trainers.tools.playground", str(run_dir),
                  stdin=json.dumps({"prompt": prompt, "max_new_tokens": 16, "temperature": 1.0}))
    assert [x["model"] for x in played if x.get("done")] == ["adapter", "base"], played
    text = {m: "".join(x.get("text", "") for x in played if x["model"] == m)
            for m in ("adapter", "base")}
    assert text["adapter"].strip() and text["adapter"] != text["base"], text

    out = tool("trainers.tools.export", str(run_dir), "--out", str(tmp_path / "merged"))
    assert out[-1] == {"done": True, "out_dir": str(tmp_path / "merged")}, out
    merged = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert type(merged).__name__ == "BartForConditionalGeneration"
    assert not any("lora" in name for name, _ in merged.named_parameters())
    AutoTokenizer.from_pretrained(tmp_path / "merged")
    # the merged float16 model computes what base + adapter compute, and not what base does
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_bart, dtype=torch.float32)
    with_adapter, tokenizer = playground.load(run_dir)
    inputs = tokenizer(prompt, return_tensors="pt")
    start = torch.tensor([[merged.config.decoder_start_token_id]])
    with torch.no_grad():
        logits = [m(**inputs, decoder_input_ids=start).logits for m in (merged, with_adapter, base)]
    assert (logits[0] - logits[1]).abs().max() < 1e-2
    assert (logits[0] - logits[2]).abs().max() > 0.05


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
