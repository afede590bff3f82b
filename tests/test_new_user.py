"""Issue 15, "the dashboard as a new user meets it", without a server: every config problem at
once, adaptive defaults, the checks Validate adds, the status texts, the log tail, the
Playground's end markers, the benchmark verdict and table, the environment report, the port
check. The same things over HTTP and in Chromium: test_new_user_http.py, test_new_user_browser.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from trainers.config import build_config, check_config
from trainers.tools.demo import SAMPLE_SFT

ROOT = Path(__file__).resolve().parents[1]
BENCH_1B = ROOT / "benchmarks" / "results" / "archive" / "bench_llama-3.2-1b_lora16-qlora4" / "results.json"


# --- the config: every problem at once, defaults that adapt ----------------------------------

def test_unknown_keys_and_rule_violations_are_reported_together():
    problems = check_config({"provider": "unsloth", "max_seq_length": -1, "lora_r": 0,
                             "lora_rank": 8, "colour": 1, "model_name": "m", "dataset": "d"})
    by_field = {p["field"]: p["message"] for p in problems}
    assert set(by_field) == {"lora_rank", "colour", "lora_r", "max_seq_length"}
    assert "Did you mean 'lora_r'?" in by_field["lora_rank"]
    assert "cannot be -1 with the unsloth provider" in by_field["max_seq_length"]
    listed = [p for p in problems if "Valid fields are:" in p["message"]]
    assert len(listed) == 1  # the list of valid fields once, not once per unknown key
    assert "See the valid fields above" in by_field["colour"]


def test_a_type_error_does_not_hide_the_rules_of_the_other_fields():
    problems = check_config({"model_name": "m", "dataset": "d", "lora_r": "x", "lora_alpha": 0,
                             "bf16": True, "fp16": True})
    assert [p["field"] for p in problems] == ["lora_r", "lora_alpha", "bf16"]


def test_dpo_max_prompt_length_adapts_to_a_short_max_seq_length_unless_set():
    base = {"model_name": "m", "dataset": "d", "strategy": "dpo", "max_seq_length": 256}
    assert build_config(base).max_prompt_length == 128
    assert build_config({**base, "max_seq_length": 2048}).max_prompt_length == 512
    assert build_config({**base, "strategy": "sft"}).max_prompt_length == 512
    explicit = check_config({**base, "max_prompt_length": 512})
    assert [p["field"] for p in explicit] == ["max_prompt_length"]  # an explicit conflict


def test_the_form_leaves_an_adaptive_default_to_adapt():
    from modelforge_ui.form import ConfigForm

    form = ConfigForm()
    values = form.from_dict({"model_name": "m", "dataset": "d", "strategy": "dpo",
                             "max_seq_length": 256})
    assert form.validate(values).max_prompt_length == 128
    values[form.index("max_prompt_length")] = 100
    assert form.validate(values).max_prompt_length == 100


# --- what Validate checks beyond the schema ----------------------------------------------------

def test_gpu_only_settings_are_problems_on_a_machine_without_a_gpu():
    from trainers.runs.preflight import check_gpu_only, gpu_only_problems

    cfg = build_config({"model_name": "m", "dataset": "d"}, preset="optimal")
    problems = gpu_only_problems(cfg, ["cpu"])
    assert [p["field"] for p in problems] == ["use_4bit"]
    assert "needs a CUDA GPU" in problems[0]["message"] and "strategy to sft" in \
        problems[0]["message"]
    eight_bit = build_config({"model_name": "m", "dataset": "d"}, preset="speed")
    assert [p["field"] for p in gpu_only_problems(eight_bit, ["cpu"])] == ["optim"]
    with pytest.raises(Exception, match="use_4bit"):
        check_gpu_only(cfg, ["cpu"])


def test_a_malformed_data_line_is_a_problem_before_start(tmp_path):
    from trainers.runs.preflight import data_problems

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": \n',
                   encoding="utf-8")
    cfg = build_config({"model_name": "m", "dataset": str(bad)})
    problems = data_problems(cfg)
    assert [p["field"] for p in problems] == ["dataset"]
    assert "line 2" in problems[0]["message"]
    assert data_problems(build_config({"model_name": "m", "dataset": str(SAMPLE_SFT)})) == []


# --- what the status says -------------------------------------------------------------------------

def _run(status: str, **extra) -> dict:
    return {"id": "r1", "name": "run", "status": status, "config": {"logging_steps": 1},
            "progress": {"step": 7, "total_steps": 50, "loss": 2.0, "tokens_per_s": 13850.5,
                         "elapsed_s": 10, "eta_s": 60},
            "summary": {}, "started_event": {}, **extra}


def test_a_stopped_run_says_at_which_step_and_where_the_adapter_is():
    from modelforge_ui.views import progress_markdown

    text = progress_markdown(_run("stopped", summary={
        "steps": 7, "total_steps": 50, "adapter_dir": "/data/runs/r1/adapter",
        "train_loss": 2.1, "tokens_per_s": 7686.0}))
    assert "stopped at step 7 of 50; adapter saved in `/data/runs/r1/adapter`" in text
    assert "7,686.0 tokens/s (whole run)" in text and "13,850.5 tokens/s (last step)" in text


def test_run_warnings_are_in_the_status():
    from modelforge_ui.views import progress_markdown

    note = "Unsloth's CPU backend replaces optim adamw_torch with adamw_torch_fused."
    text = progress_markdown(_run("running", started_event={"provider": "unsloth",
                                                            "warnings": [note]}))
    assert f"**Warning:** {note}" in text
    every = progress_markdown(_run("running", config={"logging_steps": 5}))
    assert "tokens/s (last 5 steps)" in every


# --- the log tail ---------------------------------------------------------------------------------

def test_the_log_tail_is_the_newest_lines_without_bars_and_warnings():
    from modelforge_ui.log_view import clean_tail

    log = "\n".join([
        "ress: 100%|##########| 20/20 [00:00<00:00, 5790.84it/s]",  # a cut first line
        "W1201 10:35:46.160000 3996 torch/utils/_pytree.py:630] register_constant() is deprecated",
        "/x/dataloader.py:759: UserWarning: 'pin_memory' argument is set as true",
        "  super().__init__(loader)",
        "Loading weights:   0%|          | 0/20 [00:00<?, ?it/s]\rLoading weights: 100%|#| 20/20",
        *[f"{{'loss': {i}}}" for i in range(30)],
    ])
    tail = clean_tail(log, lines=10)
    rows = tail.splitlines()
    assert rows[0] == "(2 library warnings hidden here; all of them are in train.log)"
    assert rows[-1] == "{'loss': 29}" and len(rows) == 10
    assert "%|" not in tail and "Warning" not in tail.split("\n", 1)[1]
    narrow = clean_tail("a\n" + "\n".join("x" * 100 for _ in range(5)), lines=6, width=50)
    assert len(narrow.splitlines()) == 3  # 2 rows each: three fill the box


# --- the Playground -------------------------------------------------------------------------------

def test_generations_end_at_an_end_marker_and_drop_special_tokens():
    from trainers.tools.playground import END_MARKERS, without_special

    chunks = ["Why might", " it change?<", "|endo", "ftext|> and more", " noise"]
    assert "".join(without_special(iter(chunks), END_MARKERS)) == "Why might it change?"
    assert "".join(without_special(iter(["a<pad>b", " <", "c"]), END_MARKERS, ("<pad>",))) == \
        "ab <c"


# --- the benchmark verdict and table ---------------------------------------------------------------

def _summary(**top) -> dict:
    row = {"runs": 3, "runs_ok": 3, "status": "ok", "reason": None, "mode": "lora16",
           "matched": "matched"}
    return {"spec": {"repeats": 3}, "complete": True, "representative": True, "checks": [],
            "table": [
                {**row, "provider": "huggingface", "tokens_per_s": 14000.0,
                 "tokens_per_s_total": 12000.0, "peak_allocated_gib": 6.5, "mfu": 0.07},
                {**row, "provider": "unsloth", "tokens_per_s": 30000.0,
                 "tokens_per_s_total": 22800.0, "peak_allocated_gib": 4.745, "mfu": 0.15},
                {**row, "provider": "huggingface", "mode": "qlora4", "tokens_per_s": 12000.0,
                 "tokens_per_s_total": 11000.0, "peak_allocated_gib": 7.0},
                {**row, "provider": "unsloth", "mode": "qlora4", "status": "failed",
                 "runs_ok": 0, "reason": "CUDA out of memory. " + "Tried to allocate " * 40},
            ], **top}


def test_the_verdict_says_who_is_faster_on_the_whole_measured_time():
    from modelforge_ui.benchmark_view import verdict_markdown

    text = verdict_markdown(_summary())
    assert ("**16-bit LoRA: Unsloth 1.90x faster (2.14x faster by median step), 27% less peak "
            "VRAM, matched**") in text
    assert "MFU 15.0% vs 7.0%" in text and "3 repeats each" in text
    assert "**QLoRA 4-bit: Unsloth failed** (CUDA out of memory." in text
    cpu = verdict_markdown(_summary(representative=False, representative_reason="on the CPU"))
    assert "not representative of GPU speed" in cpu


def test_the_table_puts_the_answer_first_and_cuts_a_long_failure():
    from modelforge_ui.benchmark_view import compact_table

    table = compact_table(_summary())
    assert list(table.columns)[:5] == ["variant", "tokens/s (whole measured time)", "speedup",
                                       "VRAM saved", "matched"]
    assert table.iloc[1].tolist()[:5] == ["Unsloth · 16-bit LoRA", "22,800 (median 30,000)",
                                          "1.90x", "27.0%", "matched"]
    failed = table.iloc[3]["status"]
    assert failed.startswith("failed 0/3: CUDA out of memory.") and len(failed) < 70


def test_committed_and_older_results_files_show_their_verdicts():
    from modelforge_ui.benchmark_view import compact_table, verdict_markdown

    summary = json.loads(BENCH_1B.read_text(encoding="utf-8"))  # today's schema, rebuilt
    text = verdict_markdown(summary)
    assert ("**16-bit LoRA: Unsloth 2.09x faster (2.15x faster by median step), 27% less peak "
            "VRAM, matched**") in text
    assert "**QLoRA 4-bit: Unsloth 2.13x faster (2.44x faster by median step)" in text
    assert compact_table(summary).columns[1] == "tokens/s (whole measured time)"
    oldest = _summary()  # before the whole-time figure was recorded: the median step only
    for row in oldest["table"]:
        row.pop("tokens_per_s_total", None)
    assert "**16-bit LoRA: Unsloth 2.14x faster, 27% less peak VRAM" in verdict_markdown(oldest)
    assert compact_table(oldest).columns[1] == "tokens/s (median step)"
    assert verdict_markdown({"table": "not a list"}) == "**Verdict:** no results yet."


# --- the environment report and the port ------------------------------------------------------------

def test_no_gpu_only_package_is_suggested_without_a_gpu(monkeypatch):
    from trainers.tools import doctor

    monkeypatch.setattr(doctor, "installed_version", lambda dist: None)
    rows = {c["name"]: c for c in doctor.check_packages(gpu=False)}
    assert rows["flash-attn"]["status"] == "ok" and rows["flash-attn"]["fix"] == ""
    assert "only useful with a CUDA GPU" in rows["flash-attn"]["value"]
    with_gpu = {c["name"]: c for c in doctor.check_packages(gpu=True)}
    assert "pip install flash-attn" in with_gpu["flash-attn"]["fix"]


def test_the_hub_is_not_called_online_when_it_cannot_be_reached(monkeypatch):
    from trainers.tools import doctor

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens once the socket is closed
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed}")
    check = doctor.check_hub()
    assert check["status"] == "warn" and "cannot be reached" in check["value"]
    assert "HF_HUB_OFFLINE=1" in check["fix"]


def test_a_busy_port_is_found_before_serving():
    from modelforge_ui.server import port_in_use

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert port_in_use("127.0.0.1", port) is None
