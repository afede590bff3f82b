"""trainers/train/prepare.py: the one preparation the worker and the benchmark share."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainers.config import build_config

# Prepares the demo model in a fresh process (so no other test's imports count) with -1 resolved
# to 77 by the rows callback (which returns the config to load with), and reports what it got.
PREPARE_SCRIPT = """
import json, sys
from trainers.config import build_config
from trainers.train.prepare import prepare
cfg = build_config({"model_name": sys.argv[1], "dataset": "unused.jsonl", "max_seq_length": -1})
seen = []
ready = prepare(cfg, lambda provider, tokenizer: seen.append(tokenizer.pad_token)
                or cfg.model_copy(update={"max_seq_length": 77}))
print("RESULT", json.dumps({
    "given": cfg.max_seq_length, "resolved": ready.cfg.max_seq_length, "pad_token_seen": seen,
    "model": type(ready.model).__name__, "fixes": ready.fixes, "info": ready.provider.info,
    "unsloth_imported": "unsloth" in sys.modules, "load_s": ready.model_load_s}))
"""


def test_huggingface_preparation(demo_model):
    result = subprocess.run([sys.executable, "-c", PREPARE_SCRIPT, str(demo_model)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert got["given"] == -1 and got["resolved"] == 77  # the model sees only the resolved one
    assert len(got["pad_token_seen"]) == 1 and got["pad_token_seen"][0]  # once, pad token set
    assert got["model"] == "PeftModelForCausalLM" and got["load_s"] > 0
    assert got["info"]["seq2seq"] is False and got["info"]["trainable_parameters"] > 0
    assert got["unsloth_imported"] is False  # a huggingface run is a stock Hugging Face process
    from trainers.train.providers.huggingface import TORCH_LM_HEAD

    assert got["fixes"] == {"trl_lm_head": TORCH_LM_HEAD}  # no GPU here: TRL's head replaced


def test_an_unresolved_length_never_reaches_the_model(demo_model):
    from trainers.train.prepare import prepare

    cfg = build_config({"model_name": str(demo_model), "dataset": "unused.jsonl",
                        "max_seq_length": -1})
    with pytest.raises(ValueError, match="not resolved"):
        prepare(cfg)


def test_the_model_class_follows_the_architecture():
    from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, BartConfig,
                              LlamaConfig)

    from trainers.train.providers import get_provider

    for name in ("huggingface", "unsloth"):
        provider = get_provider(name)
        assert provider.model_class(BartConfig()) is AutoModelForSeq2SeqLM
        assert provider.model_class(LlamaConfig()) is AutoModelForCausalLM


def test_unsloth_needs_no_fix_of_ours():
    from trainers.train.providers import get_provider

    assert get_provider("unsloth").apply_process_fixes() == {}
