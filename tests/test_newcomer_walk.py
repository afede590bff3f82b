"""Issue 30, what a newcomer met, on the command line and over real HTTP: a preset that a
config full of defaults silently overrode, problems reported one fix at a time, a missing path
called "outside the allowed roots", a port hint that led into another wall, and `modelforge
bench` calling a failed variant success on a CPU. (The Training tab's part: test_newcomer_walk
_browser.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trainers.config import build_config, save_config
from trainers.runs.manager import visible_gpus
from trainers.tools.demo import SAMPLE_DIR, SAMPLE_SFT, demo_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def modelforge(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelforge_ui.cli", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def full_config(demo_model: Path) -> dict:
    """What `modelforge demo-model --config` writes: every field, defaults filled in."""
    return build_config(demo_config(demo_model)).model_dump(mode="json")


# --- 1. a preset beats fields that merely hold defaults -------------------------------------

def test_a_preset_beats_the_defaults_of_a_full_config_and_names_what_the_file_overrides(
        demo_model):
    cfg = build_config(full_config(demo_model), preset="speed")
    assert (cfg.per_device_train_batch_size, cfg.optim, cfg.speed_mode) == (16, "adamw_8bit", True)
    assert cfg.max_seq_length == 512  # the file's own value (the preset says 2048) wins
    explicit = build_config(full_config(demo_model), "speed", keep={"optim"})  # as --set does
    assert explicit.optim == "adamw_torch" and explicit.per_device_train_batch_size == 16


def test_train_with_a_preset_says_which_preset_fields_the_config_overrides(demo_model, tmp_path):
    path = tmp_path / "config.json"
    save_config(build_config(demo_config(demo_model)), path)  # as `demo-model --config` does
    done = modelforge("train", str(path), "--preset", "memory", "--data-dir", str(tmp_path / "d"))
    note = next(line for line in done.stderr.splitlines() if line.startswith("note:"))
    assert "preset 'memory'" in note and "max_seq_length = 512 (preset: 1024)" in note
    assert "per_device_train_batch_size" not in note  # a default: the preset's 2 applies
    if not visible_gpus():  # the preset's use_4bit applied, so a CPU machine refuses the run
        assert done.returncode == 2 and "use_4bit" in done.stderr, done.stderr[-2000:]


def test_the_api_preset_names_the_overridden_fields(client, demo_model):
    answer = client.post("/api/config/check?preset=speed", json=full_config(demo_model)).json()
    assert any("max_seq_length = 512 (preset: 2048)" in n for n in answer["notes"]), answer
    if not visible_gpus():  # the preset's 8-bit optimizer took effect: refused on a CPU
        assert [p["field"] for p in answer["problems"]] == ["optim"], answer


# --- 5. every problem at once; "does not exist" vs "outside the allowed roots" ---------------

def test_config_check_reports_the_field_and_the_path_problems_at_once(client, demo_model):
    body = {"provider": "unsloth", "max_seq_length": -1, "model_name": str(demo_model),
            "dataset": str(SAMPLE_DIR / "instructons.jsonl")}
    problems = client.post("/api/config/check", json=body).json()["problems"]
    by_field = {p["field"]: p["message"] for p in problems}
    assert set(by_field) == {"max_seq_length", "dataset"}, problems
    assert "does not exist" in by_field["dataset"]


def test_a_missing_path_outside_the_roots_is_missing_an_existing_one_is_outside(
        client, demo_model, tmp_path):
    body = {"model_name": str(demo_model), "dataset": str(tmp_path / "nowhere.jsonl")}
    missing = client.post("/api/config/check", json=body).json()["problems"]
    assert len(missing) == 1 and "does not exist" in missing[0]["message"], missing
    assert "allowed roots" not in missing[0]["message"]
    there = tmp_path / "data.jsonl"
    there.write_bytes(SAMPLE_SFT.read_bytes())
    outside = client.post("/api/config/check", json={**body, "dataset": str(there)}).json()
    assert "outside the allowed roots" in outside["problems"][0]["message"], outside


# --- 7. the port hint: another server on this data directory is said first --------------------

def test_a_second_server_on_the_same_data_dir_and_port_is_told_both_ways_out(server):
    done = modelforge("run", "--port", str(server.port), "--data-dir", str(server.data_dir),
                      "--no-dashboard", timeout=120)
    assert done.returncode == 2
    first = done.stderr.strip().splitlines()[0]
    assert "another ModelForge server" in first and server.url in first, done.stderr
    assert "--data-dir" in first and "in use" not in done.stderr


# --- 3. `modelforge bench` on a CPU ----------------------------------------------------------

def test_bench_defaults_to_the_modes_this_machine_runs(monkeypatch, demo_model):
    from modelforge_ui.cli import _parser
    from modelforge_ui.cli_bench import spec_from_args

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a machine without a GPU
    spec = spec_from_args(_parser().parse_args(["bench", "--model", str(demo_model)]))
    assert spec.modes == ["lora16"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    spec = spec_from_args(_parser().parse_args(["bench", "--model", str(demo_model)]))
    assert spec.modes == ["lora16", "qlora4"]




# --- 6. the demo's pre-training is not silent for minutes -----------------------------------

def test_the_demo_pre_training_reports_its_step_and_the_time_left(tmp_path, capfd):
    from trainers.tools.demo import build_demo_model

    build_demo_model(tmp_path / "demo", pretrain_steps=3)
    lines = [line for line in capfd.readouterr().err.splitlines() if "pre-training" in line]
    assert lines[-1].startswith("pre-training the demo model: step 3/3, about 0 s left"), lines


# --- 8. the smaller ones ------------------------------------------------------------------

def test_a_missing_dataset_on_the_cli_is_refused_before_a_run_record(demo_model, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_name": str(demo_model), "dataset": "instructons.jsonl"}))
    done = modelforge("train", str(path), "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 2 and "instructons.jsonl does not exist" in done.stderr
    assert "upload" not in done.stderr  # a command line has no uploads
    from trainers.runs.registry import RunRegistry

    assert RunRegistry(tmp_path / "d").list() == []


def test_default_run_names_are_told_apart(demo_model, tmp_path):
    from trainers.runs.registry import RunRegistry

    registry = RunRegistry(tmp_path)
    cfg = build_config({"model_name": str(demo_model), "dataset": str(SAMPLE_SFT)})
    names = [registry.create(cfg)["name"] for _ in range(2)]
    assert names == [f"huggingface sft {demo_model.name} #{n}" for n in (1, 2)]
