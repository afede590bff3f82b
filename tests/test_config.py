"""Every rule of the config schema, with its message."""

from __future__ import annotations

import json

import pytest

from trainers.config import (PRESETS, TrainConfig, build_config, check_config, config_to_text,
                             field_names, load_config_file, save_config)
from trainers.errors import ConfigError

DOCUMENTED_EXAMPLE = {
    "provider": "huggingface", "model_name": "meta-llama/Llama-3.2-3B", "max_seq_length": 2048,
    "task": "text-generation", "strategy": "sft", "dataset": "/path/to/dataset.jsonl",
    "num_train_epochs": 3, "lora_r": 16, "lora_alpha": 32,
}


def base(**overrides) -> dict:
    return {**DOCUMENTED_EXAMPLE, **overrides}


def problems_for(**overrides) -> dict[str, str]:
    return {p["field"]: p["message"] for p in check_config(base(**overrides))}


def test_documented_example_validates_verbatim():
    cfg = build_config(DOCUMENTED_EXAMPLE)
    assert cfg.num_train_epochs == 3 and cfg.lora_alpha == 32 and cfg.trust_remote_code is False


def test_every_field_is_documented_and_grouped():
    for name, field in TrainConfig.model_fields.items():
        assert field.description and len(field.description) > 10, name
        assert field.json_schema_extra["group"] in (
            "model", "data", "lora", "optimisation", "advanced"), name


def test_unknown_key_is_rejected_listing_valid_ones():
    problems = problems_for(lora_rank=8)
    message = problems["lora_rank"]
    assert "unknown field 'lora_rank'" in message
    assert "Did you mean 'lora_r'" in message
    assert all(name in message for name in field_names())


@pytest.mark.parametrize("field,value,words", [
    ("lora_r", 0, "at least 1"),
    ("lora_alpha", 0, "greater than 0"),
    ("lora_dropout", 1.0, "below 1"),
    ("lora_dropout", -0.1, "at least 0"),
    ("learning_rate", 0, "greater than 0 and at most 1"),
    ("learning_rate", 1.5, "greater than 0 and at most 1"),
    ("per_device_train_batch_size", 0, "at least 1"),
    ("gradient_accumulation_steps", 0, "at least 1"),
    ("eval_split", 1.0, "below 1"),
    ("eval_split", -0.2, "at least 0"),
    ("max_seq_length", 8, "-1 (infer from the data) or at least 16"),
    ("max_seq_length", -2, "-1 (infer from the data) or at least 16"),
    ("seed", 2**64, "from 0 to 4294967295"),
    ("seed", -1, "from 0 to 4294967295"),
    ("num_train_epochs", 1e308, "at most 10000"),
    ("num_processes", 10**6, "at most 1024"),
])
def test_ranges(field, value, words):
    problems = problems_for(**{field: value})
    assert field in problems and words in problems[field]


@pytest.mark.parametrize("field,value", [
    ("lora_r", 1), ("lora_dropout", 0.0), ("learning_rate", 1.0), ("eval_split", 0.0),
    ("max_seq_length", -1), ("max_seq_length", 16), ("seed", 0), ("seed", 2**32 - 1),
    ("num_train_epochs", 10000), ("num_processes", 1024),
])
def test_range_edges_that_are_allowed(field, value):
    assert check_config(base(**{field: value})) == []


@pytest.mark.parametrize("field", ["num_train_epochs", "lora_alpha", "weight_decay",
                                   "max_grad_norm", "beta", "learning_rate"])
def test_non_finite_numbers_are_refused(field):
    """1e999 in JSON and .inf in YAML both read as infinity; no rule above may let it through."""
    for value in (float("inf"), float("nan")):
        problems = problems_for(**{field: value})
        assert "finite number" in problems[field], (field, value, problems)


def test_bf16_and_fp16_together_is_an_error():
    assert "cannot both be on" in problems_for(bf16=True, fp16=True)["bf16"]


def test_qlora_means_4bit():
    assert build_config(base(strategy="qlora")).use_4bit is True
    message = problems_for(strategy="qlora", use_4bit=False)["use_4bit"]
    assert "set use_4bit to true" in message


def test_unsloth_with_inferred_length_fails_with_the_documented_message():
    message = problems_for(provider="unsloth", max_seq_length=-1)["max_seq_length"]
    assert message == ("max_seq_length cannot be -1 with the unsloth provider: "
                       "set a fixed value such as 2048")


def test_migration_needs_only_provider_and_a_fixed_length():
    hf = base(max_seq_length=-1)
    assert check_config(hf) == []
    assert "max_seq_length" in {p["field"] for p in check_config({**hf, "provider": "unsloth"})}
    migrated = build_config({**hf, "provider": "unsloth", "max_seq_length": 2048})
    assert migrated.model_dump(exclude={"provider", "max_seq_length"}) == \
        build_config(hf).model_dump(exclude={"provider", "max_seq_length"})


def test_wrong_types_and_missing_fields_name_the_field():
    problems = {p["field"]: p["message"] for p in check_config(
        {"model_name": "m", "lora_r": "sixteen", "task": "translation"})}
    assert "dataset" in problems and "is required" in problems["dataset"]
    assert "'sixteen'" in problems["lora_r"]
    assert "'text-generation'" in problems["task"]


def test_every_problem_is_reported_at_once():
    problems = problems_for(lora_r=0, learning_rate=2.0, bf16=True, fp16=True)
    assert {"lora_r", "learning_rate", "bf16"} <= set(problems)


def test_config_error_text_names_field_and_fix():
    with pytest.raises(ConfigError) as info:
        build_config(base(lora_dropout=2))
    assert "lora_dropout" in str(info.value) and "use 0 to 0.1" in str(info.value)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_apply_and_fields_override(name):
    cfg = build_config(base(), preset=name)
    for field, value in PRESETS[name].items():
        if field not in DOCUMENTED_EXAMPLE:
            assert getattr(cfg, field) == value, field
    overridden = build_config(base(per_device_train_batch_size=3), preset=name)
    assert overridden.per_device_train_batch_size == 3


def test_optimal_preset_values():
    cfg = build_config({"model_name": "m", "dataset": "d"}, preset="optimal")
    assert (cfg.strategy, cfg.use_4bit, cfg.bf16, cfg.gradient_checkpointing) == \
        ("qlora", True, True, True)
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (8, 4)
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.max_seq_length) == \
        (64, 16, 0.1, 2048)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        build_config(base(), preset="fast")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_files_round_trip_exactly(tmp_path, suffix):
    cfg = build_config(base(target_modules=["q_proj", "v_proj"], column_mapping={"prompt": "q"},
                            learning_rate=1.5e-4, name="ünïcode run"))
    path = tmp_path / f"config{suffix}"
    save_config(cfg, path)
    again = build_config(load_config_file(path))
    assert again == cfg
    save_config(again, tmp_path / f"again{suffix}")
    assert (tmp_path / f"again{suffix}").read_text() == path.read_text()


def test_yaml_and_json_hold_the_same_config(tmp_path):
    cfg = build_config(base())
    assert json.loads(config_to_text(cfg, "json")) == cfg.model_dump(mode="json")
    (tmp_path / "c.yaml").write_text(config_to_text(cfg, "yaml"))
    assert build_config(load_config_file(tmp_path / "c.yaml")) == cfg


def test_malformed_config_file_says_where(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"model_name": "m",\n "dataset": }')
    with pytest.raises(ConfigError, match="not valid JSON.*line 2"):
        load_config_file(path)


# --- path fields: marked once in the schema --------------------------------------------------

def test_path_fields_are_marked_in_the_schemas():
    from trainers.benchmark.spec import BenchmarkSpec
    from trainers.config import path_fields
    from trainers.tools.preview import PreviewRequest

    assert path_fields(TrainConfig) == {"model_name": "model", "dataset": "file",
                                        "output_dir": "dir"}
    assert path_fields(BenchmarkSpec) == {"model": "model", "tokenizer": "model",
                                          "dataset": "file"}
    assert path_fields(PreviewRequest) == {"dataset": "file", "model_name": "model"}


def test_with_absolute_paths_follows_the_marks(tmp_path, monkeypatch):
    from trainers.benchmark.spec import BenchmarkSpec
    from trainers.config import with_absolute_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text("{}\n")
    (tmp_path / "model").mkdir()
    raw = {"model_name": "model", "dataset": "data.jsonl", "output_dir": "out/new",
           "name": "data.jsonl"}
    assert with_absolute_paths(raw) == {
        "model_name": str(tmp_path / "model"), "dataset": str(tmp_path / "data.jsonl"),
        "output_dir": str(tmp_path / "out" / "new"),  # need not exist yet
        "name": "data.jsonl"}  # not a path field
    hub = {"model_name": "meta-llama/Llama-3.2-3B", "dataset": "owner/set", "output_dir": ""}
    assert with_absolute_paths(hub) == hub  # hub ids, and nothing that is not here, stay
    spec = {"model": "model", "tokenizer": "model", "dataset": "data.jsonl", "lora_r": 4}
    assert with_absolute_paths(spec, BenchmarkSpec) == {
        "model": str(tmp_path / "model"), "tokenizer": str(tmp_path / "model"),
        "dataset": str(tmp_path / "data.jsonl"), "lora_r": 4}
