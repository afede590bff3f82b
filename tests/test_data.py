"""Data formats, detection, flattening, bad data and the preview."""

from __future__ import annotations

import json

import pytest

from trainers import data
from trainers.tools.demo import SAMPLE_PREFERENCES, SAMPLE_SFT
from trainers.errors import DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(demo_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model)


@pytest.mark.parametrize("rows,fmt", [
    ([{"text": "Hello world."}], "text"),
    ([{"prompt": "2+2=", "completion": "4"}], "prompt_completion"),
    ([{"instruction": "Add", "input": "2 and 2", "output": "4"}], "alpaca"),
    ([{"messages": [{"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"}]}], "messages"),
    ([{"document": "Long text.", "summary": "Short."}], "summarization"),
    ([{"question": "Who?", "context": "Ann did it.", "answer": "Ann"}], "question_answering"),
    ([{"question": "Who?", "context": "Ann did.", "answers": {"text": ["Ann"]}}],
     "question_answering"),
    ([{"prompt": "Q", "chosen": "good", "rejected": "bad"}], "preference"),
])
def test_formats_are_detected_and_named(tmp_path, rows, fmt):
    strategy = "dpo" if fmt.startswith("preference") else "sft"
    loaded = data.load_data(write_jsonl(tmp_path / "d.jsonl", rows), strategy=strategy)
    assert loaded.format == fmt
    expected_keys = {"messages": {"messages", "line"},
                     "preference": {"prompt", "chosen", "rejected", "line"}}
    assert set(loaded.examples[0]) == expected_keys.get(fmt, {"prompt", "completion", "line"})


def test_alpaca_input_and_qa_context_reach_the_prompt(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"instruction": "Add", "input": "2 and 2", "output": "4"}])
    ex = data.load_data(path).examples[0]
    assert "Add" in ex["prompt"] and "2 and 2" in ex["prompt"] and ex["completion"] == "4"
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"question": "Who?", "context": "Ann did.", "answers": {"text": ["Ann"]}}])
    ex = data.load_data(path).examples[0]
    assert "Ann did." in ex["prompt"] and ex["completion"] == " Ann"


def test_nested_instances_are_flattened(public_data):
    loaded = data.load_data(str(public_data / "self_instruct_seed_tasks.jsonl"))
    assert loaded.format == "nested_instances"
    rows = [json.loads(line) for line in
            (public_data / "self_instruct_seed_tasks.jsonl").read_text().splitlines()]
    assert len(loaded.examples) == sum(len(r["instances"]) for r in rows)


def test_several_instances_become_several_examples(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "Double it", "instances": [
        {"input": "2", "output": "4"}, {"input": "3", "output": "6"}]}])
    loaded = data.load_data(path)
    assert loaded.format == "nested_instances"
    assert [e["completion"] for e in loaded.examples] == ["4", "6"]
    assert "Double it" in loaded.examples[1]["prompt"] and "3" in loaded.examples[1]["prompt"]


def test_shared_prompt_completion_and_summaries(public_data):
    assert data.load_data(str(public_data / "t0_mix_prompt_completion.jsonl")).format == \
        "prompt_completion"
    loaded = data.load_data(str(public_data / "cnn_dailymail_tldr_summarization.jsonl"))
    assert loaded.format == "summarization" and "Summary:" in loaded.examples[0]["prompt"]


def test_shared_prefix_preferences(public_data):
    loaded = data.load_data(str(public_data / "hh_rlhf_harmless_test_preferences.jsonl"),
                            strategy="dpo")
    assert loaded.format == "preference_shared_prefix"
    ex = loaded.examples[0]
    assert ex["prompt"].rstrip().endswith("Assistant:")
    assert ex["chosen"] != ex["rejected"]


def test_column_mapping_overrides_detection(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "2+2=", "a": "4", "text": "ignored"}])
    assert data.load_data(path).format == "text"
    loaded = data.load_data(path, column_mapping={"prompt": "q", "completion": "a"})
    assert loaded.format == "prompt_completion"
    assert loaded.examples[0]["prompt"] == "2+2=" and loaded.examples[0]["completion"] == "4"


def test_column_mapping_to_a_missing_column(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "x", "a": "y"}])
    with pytest.raises(DataError, match="not in the data"):
        data.load_data(path, column_mapping={"prompt": "question"})


def test_csv_parquet_and_json_array(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"prompt": ["a", "b"], "completion": ["c", "d"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(frame.to_json(orient="records"))
    for name in ("d.csv", "d.parquet", "d.json"):
        loaded = data.load_data(str(tmp_path / name))
        assert loaded.format == "prompt_completion" and len(loaded.examples) == 2, name


def test_malformed_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": }\n')
    with pytest.raises(DataError) as info:
        data.load_data(str(path))
    assert str(path) in info.value.message and "line 2" in info.value.message


def test_missing_field_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"},
                                              {"prompt": "a", "completion": "b"},
                                              {"prompt": "only a prompt"}])
    with pytest.raises(DataError, match="line 3: missing field 'completion'"):
        data.load_data(path)


def test_empty_file_and_unsupported_extension(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="is empty"):
        data.load_data(str(tmp_path / "empty.jsonl"))
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(DataError, match="unsupported extension '.txt'") as info:
        data.load_data(str(tmp_path / "d.txt"))
    assert ".jsonl" in info.value.hint


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load_data(str(tmp_path / "nope.jsonl"))


def test_too_small_for_one_batch():
    with pytest.raises(DataError, match="only 3 training examples, fewer than one batch of 4"):
        data.check_enough_for_a_batch(3, 4, "d.jsonl")


def test_strategy_and_format_must_agree():
    with pytest.raises(DataError, match="strategy dpo needs preference pairs"):
        data.load_data(str(SAMPLE_SFT), strategy="dpo")
    with pytest.raises(DataError, match="strategy sft needs supervised examples"):
        data.load_data(str(SAMPLE_PREFERENCES), strategy="sft")


def test_completion_only_mask(tokenizer):
    example = {"prompt": "Question: 2+2?", "completion": " 4", "line": 1}
    row = data.tokenize_example(example, tokenizer, completion_only_loss=True)
    prompt_len = len(tokenizer(example["prompt"])["input_ids"])
    assert row["completion_mask"][:prompt_len] == [0] * prompt_len
    assert row["completion_mask"][prompt_len:] == [1] * (len(row["input_ids"]) - prompt_len)
    assert row["input_ids"][-1] == tokenizer.eos_token_id
    everything = data.tokenize_example(example, tokenizer, completion_only_loss=False)
    assert set(everything["completion_mask"]) == {1}


def test_chat_messages_render_with_the_template(tokenizer):
    example = {"messages": [{"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello!"}], "line": 1}
    rendered = data.render_messages(example, tokenizer)
    assert rendered["prompt"].endswith("<|assistant|>\n") and "Hello!" in rendered["completion"]


def test_preview_shows_examples_and_token_stats(tokenizer):
    result = data.preview(str(SAMPLE_SFT), tokenizer, n=3, max_seq_length=64)
    assert result["format"] == "prompt_completion" and len(result["examples"]) == 3
    stats = result["token_stats"]
    assert stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"]
    assert 0 < stats["truncated"] < stats["count"] == 400
    lengths = [len(data.tokenize_example(e, tokenizer, True)["input_ids"])
               for e in data.load_data(str(SAMPLE_SFT)).examples]
    assert stats["truncated"] == sum(n > 64 for n in lengths)


def test_infer_max_seq_length_is_capped_by_the_model():
    assert data.infer_max_seq_length([10, 300, 33], model_max=None) == 304
    assert data.infer_max_seq_length([10, 3000], model_max=2048) == 2048


# --- files that are not UTF-8 text, or too deep to read -------------------------------------------

def _utf16(tmp_path, name):
    path = tmp_path / name
    text = {"jsonl": '{"prompt": "a", "completion": "b"}\n', "json": '[{"text": "a"}]',
            "csv": "prompt,completion\na,b\n"}[name.rsplit(".", 1)[1]]
    path.write_text(text, encoding="utf-16")
    return path


def _binary(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 8)
    return path


def _deep(tmp_path, name):
    path = tmp_path / name
    deep = "[" * 100_000 + "]" * 100_000
    path.write_text(deep + "\n" if name.endswith(".jsonl") else deep)
    return path


@pytest.mark.parametrize("make,name,words,fix", [
    (_binary, "d.jsonl", "is not UTF-8 text (binary or another encoding at byte 128)", "UTF-8"),
    (_binary, "d.json", "is not UTF-8 text (binary", "UTF-8"),
    (_binary, "d.csv", "is not UTF-8 text (binary", "UTF-8"),
    (_binary, "d.parquet", "could not be read", "Parquet"),
    (_utf16, "d.jsonl", "is not UTF-8 text (UTF-16 text)", "UTF-8"),
    (_utf16, "d.json", "is not UTF-8 text (UTF-16 text)", "UTF-8"),
    (_utf16, "d.csv", "is not UTF-8 text (UTF-16 text)", "UTF-8"),
    (_deep, "d.jsonl", "line 1: the JSON is nested too deeply", "flat objects"),
    (_deep, "d.json", "nested too deeply", "flat objects"),
])
def test_unreadable_files_are_data_errors_naming_the_file(tmp_path, make, name, words, fix):
    path = make(tmp_path, name)
    with pytest.raises(DataError) as info:
        data.load_data(str(path))
    assert str(path) in info.value.message and words in info.value.message, info.value.message
    assert fix in info.value.hint, info.value.hint


def test_rows_without_a_completion_token_are_left_out():
    rows = [{"input_ids": [1, 2, 3], "completion_mask": [0, 0, 1]},
            {"input_ids": [1, 2, 3], "completion_mask": [0, 0, 0]}]  # the prompt filled the length
    kept, left_out = data.trainable_rows(rows, "d.jsonl", 3)
    assert kept == rows[:1] and left_out == 1
    with pytest.raises(DataError, match="no example has a completion token within the first 3"):
        data.trainable_rows(rows[1:], "d.jsonl", 3)
