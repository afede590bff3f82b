"""Preference data and settings: bad pairs fail before any model loads, naming the line;
prompts are cut to max_prompt_length at token boundaries; the dpo/rlhf config rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from trainers.config import build_config, check_config
from trainers.data import load_data
from trainers.errors import DataError
from trainers.events import read_events
from trainers.runs.registry import RunRegistry

MODELFORGE = os.path.join(os.path.dirname(sys.executable), "modelforge")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"prompt": "Human: hi\n\nAssistant:", "chosen": " Hello!", "rejected": " Go away."}

BAD_DATA = [
    # (rows, words the error must contain)
    ([GOOD, {"prompt": "Q", "chosen": "A"}, GOOD], ["line 2", "missing field 'rejected'"]),
    ([{"prompt": "Q", "chosen": "A"}] * 3, ["line 1", "missing field 'rejected'"]),
    ([{"prompt": "Q", "chosen": "same", "rejected": "same"}] * 3,
     ["identical on every line", "line 1"]),
    ([GOOD, {"prompt": "   ", "chosen": "a", "rejected": "b"}], ["line 2", "prompt is empty"]),
    # chosen/rejected dialogues with nothing in common: no shared prefix, so no prompt
    ([{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
      {"chosen": "Yes.", "rejected": "No."}], ["line 2", "prompt is empty"]),
]


@pytest.mark.parametrize("rows,words", BAD_DATA)
@pytest.mark.parametrize("strategy", ["dpo", "rlhf"])
def test_bad_pairs_are_refused_with_the_line(tmp_path, rows, words, strategy):
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_data(str(path), strategy=strategy)
    text = str(err.value)
    assert str(path) in text
    for word in words:
        assert word in text
    assert err.value.hint  # says the fix


def test_mapped_columns_name_the_missing_column(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"q": "Q", "good": "A", "bad": "B"},
                                                  {"q": "Q", "good": "A"}])
    with pytest.raises(DataError, match="line 2: missing field 'bad'"):
        load_data(str(path), column_mapping={"prompt": "q", "chosen": "good", "rejected": "bad"},
                  strategy="dpo")


def test_shared_prefix_pairs_split_after_the_last_assistant_tag(public_data):
    data = load_data(str(public_data / "hh_rlhf_harmless_test_preferences.jsonl"),
                     strategy="rlhf")
    assert data.format == "preference_shared_prefix" and len(data.examples) == 20
    for ex in data.examples[:50]:
        assert ex["prompt"].rstrip().endswith("Assistant:")
        assert ex["chosen"] != ex["rejected"]


@pytest.mark.parametrize("strategy", ["dpo", "rlhf"])
def test_bad_data_fails_in_the_worker_before_the_model_loads(tmp_path, strategy):
    """Through `modelforge train`: the model path does not even exist, and the run still fails
    on the data, so the data was checked first."""
    bad = write_jsonl(tmp_path / "pairs.jsonl", [GOOD, GOOD, {"prompt": "Q", "chosen": "A"}])
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model_name": str(tmp_path / "no-such-model"),
                                  "dataset": str(bad), "strategy": strategy,
                                  "max_seq_length": 256, "max_prompt_length": 128}))
    env = {**os.environ, "MODELFORGE_HOME": str(tmp_path / "home")}
    result = subprocess.run([MODELFORGE, "train", str(config)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 1
    assert f"{bad}: line 3: missing field 'rejected'" in result.stderr
    run = RunRegistry(tmp_path / "home").list()[0]
    events = read_events(run["run_dir"])
    assert [e["type"] for e in events] == ["failed"] and events[0]["error_type"] == "data"


# --- config rules ------------------------------------------------------------------------------

def base(**overrides) -> dict:
    return {"model_name": "m", "dataset": "d.jsonl", "strategy": "dpo", "max_seq_length": 512,
            "max_prompt_length": 256, **overrides}


def test_prompt_must_leave_room_for_the_answers():
    problems = check_config(base(max_prompt_length=500))
    assert problems == [{"field": "max_prompt_length", "message": (
        "500 leaves fewer than 16 of max_seq_length (512) tokens for the answers: lower it "
        "(e.g. to 256) or raise max_seq_length")}]
    assert check_config(base(max_prompt_length=496)) == []
    assert check_config(base(max_prompt_length=500, strategy="sft")) == []
    # An inferred length (-1) is checked on the data instead.
    assert check_config(base(max_prompt_length=4096, max_seq_length=-1)) == []


def test_grpo_groups_must_fill_the_batch():
    problems = check_config(base(strategy="rlhf", per_device_train_batch_size=6,
                                 num_generations=4))
    assert [p["field"] for p in problems] == ["num_generations"]
    assert "(6) completions per step must be a multiple of num_generations (4)" in \
        problems[0]["message"]
    assert check_config(base(strategy="rlhf", per_device_train_batch_size=2,
                             gradient_accumulation_steps=2, num_generations=4)) == []
    assert check_config(base(strategy="dpo", per_device_train_batch_size=6)) == []


def test_the_default_num_generations_adapts_to_the_batch_and_an_explicit_one_does_not():
    rlhf = base(strategy="rlhf", per_device_train_batch_size=2)
    assert build_config(rlhf).num_generations == 2  # 4 does not divide 2 completions per step
    assert build_config({**rlhf, "gradient_accumulation_steps": 2}).num_generations == 4
    assert build_config(base(strategy="rlhf", per_device_train_batch_size=6)).num_generations == 2
    assert build_config(base(strategy="rlhf")).num_generations == 4  # batch 4
    explicit = check_config({**rlhf, "num_generations": 4})  # the user's own value: an error
    assert [p["field"] for p in explicit] == ["num_generations"]
    odd = check_config(base(strategy="rlhf", per_device_train_batch_size=3))  # none fits
    assert [p["field"] for p in odd] == ["num_generations"]
    assert "e.g. set per_device_train_batch_size to 4" in odd[0]["message"]


def test_beta_zero_is_allowed_for_rlhf_only():
    assert check_config(base(strategy="rlhf", beta=0, per_device_train_batch_size=4)) == []
    assert [p["field"] for p in check_config(base(beta=0))] == ["beta"]


# --- cutting prompts and answers ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(demo_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_model))


def n_tokens(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_prompts_are_cut_from_the_left_at_token_boundaries(tokenizer):
    from trainers.train.strategies.preference import cut_prompts

    text = "Human: " + "tell me about the weather in the mountains today. " * 20 + "Assistant:"
    rows = [{"prompt": text, "chosen": " Sunny.", "rejected": " No."},
            {"prompt": "Human: hi Assistant:", "chosen": " Hi", "rejected": " Bye"}]
    out, cut = cut_prompts(rows, tokenizer, 32, 128)
    assert cut == 1
    assert text.endswith(out[0]["prompt"]) and out[0]["prompt"].endswith("Assistant:")
    assert n_tokens(tokenizer, out[0]["prompt"]) == 32
    assert out[1] == rows[1]


def test_a_prompt_with_no_room_left_is_a_config_error(tokenizer):
    from trainers.errors import ConfigError
    from trainers.train.strategies.preference import cut_prompts

    rows = [{"prompt": "word " * 200, "chosen": "a", "rejected": "b"}]
    with pytest.raises(ConfigError, match="max_prompt_length: prompts of up to 126 tokens leave "
                                          "no room for the answers"):
        cut_prompts(rows, tokenizer, 126, 128)  # e.g. an inferred max_seq_length of 128
    out, _ = cut_prompts(rows, tokenizer, 120, 128)  # short answers still fit
    assert n_tokens(tokenizer, out[0]["prompt"]) == 120


def test_answers_are_cut_so_the_reward_trainer_keeps_every_pair(tokenizer):
    """RewardTrainer drops (not truncates) pairs longer than max_length; cut_answers makes
    prompt + answer + EOS fit, as TRL tokenizes them."""
    from trainers.train.strategies.preference import cut_answers

    rows = [{"prompt": "Human: why? Assistant:", "chosen": " because " * 100,
             "rejected": " no " * 100},
            {"prompt": "Human: ok? Assistant:", "chosen": " yes", "rejected": " no"}]
    out, cut = cut_answers(rows, tokenizer, 64)
    assert cut == 1 and out[1] == rows[1]
    for row in out:
        for answer in (row["chosen"], row["rejected"]):
            ids = tokenizer(row["prompt"] + answer + tokenizer.eos_token)["input_ids"]
            assert len(ids) <= 64

