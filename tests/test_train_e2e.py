"""`modelforge train` end to end on the demo model: a real worker process, real TRL training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import pytest

from trainers.events import read_events
from trainers.runs.registry import RunRegistry
from trainers.tools.demo import SAMPLE_SFT


MODELFORGE = str(Path(sys.executable).parent / "modelforge")


def run_cli(args, data_dir, timeout=600, **kwargs):
    env = {**os.environ, "MODELFORGE_HOME": str(data_dir)}
    return subprocess.run([MODELFORGE, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, **kwargs)


def only_run(data_dir) -> dict:
    runs = RunRegistry(data_dir).list()
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_model):
    """One real SFT run through the CLI, shared by the assertions below."""
    home = tmp_path_factory.mktemp("home")
    config = {"provider": "huggingface", "model_name": str(demo_model), "max_seq_length": -1,
              "task": "text-generation", "strategy": "sft", "dataset": str(SAMPLE_SFT),
              "num_train_epochs": 3, "lora_r": 16, "lora_alpha": 32}
    path = home / "config.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config))
    result = run_cli(["train", str(path), "--set", "max_steps=24", "--set", "learning_rate=0.005",
                      "--set", "per_device_train_batch_size=4", "--set", "eval_split=0.05"], home)
    return home, result


def test_cli_reports_success_and_the_adapter(trained):
    home, result = trained
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(home)
    assert run["status"] == "succeeded" and run["source"] == "cli"
    assert f"adapter saved in {run['run_dir']}/adapter" in result.stdout


def test_loss_falls_over_the_steps(trained):
    home, _ = trained
    losses = [e["loss"] for e in read_events(only_run(home)["run_dir"])
              if e["type"] == "progress" and e["loss"] is not None]
    assert len(losses) >= 20
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.1, losses


def test_run_directory_contents(trained):
    home, _ = trained
    run_dir = Path(only_run(home)["run_dir"])
    config = json.loads((run_dir / "config.json").read_text())
    from trainers.config import TrainConfig

    assert set(config) == set(TrainConfig.model_fields)  # every default filled in
    assert config["max_steps"] == 24 and config["learning_rate"] == 0.005
    assert "Traceback" not in (run_dir / "train.log").read_text()
    adapter = run_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    assert (adapter / "tokenizer.json").exists()


def test_event_fields(trained):
    home, _ = trained
    events = read_events(only_run(home)["run_dir"])
    types = [e["type"] for e in events]
    assert types[0] == "started" and types[-1] == "finished" and "saved" in types
    started = events[0]
    for key in ("device", "device_name", "device_memory_gib", "versions", "provider", "attention",
                "quantization", "max_seq_length", "token_stats"):
        assert key in started, key
    assert started["versions"]["trl"] == version("trl") and started["provider"] == "huggingface"
    progress = [e for e in events if e["type"] == "progress"]
    for key in ("step", "total_steps", "epoch", "loss", "learning_rate", "grad_norm", "tokens_seen",
                "tokens_per_s", "step_time_s", "gpu_mem_allocated_gib", "gpu_mem_reserved_gib",
                "elapsed_s", "eta_s"):
        assert key in progress[-1], key
    assert progress[-1]["step"] == progress[-1]["total_steps"] == 24
    seen = [p["tokens_seen"] for p in progress]
    assert seen == sorted(seen) and seen[-1] > 0
    assert any(e["type"] == "eval" and "eval_loss" in e for e in events)
    finished = events[-1]
    assert finished["steps"] == 24 and "telemetry_overhead_pct" in finished


def test_non_padding_tokens_are_counted(trained):
    """tokens_seen counts real tokens only: at most the data's tokens per epoch, well under
    batch x longest x steps (what counting padding would give)."""
    home, _ = trained
    events = read_events(only_run(home)["run_dir"])
    started = events[0]
    seen = [e for e in events if e["type"] == "progress"][-1]["tokens_seen"]
    padded_upper = 24 * 4 * started["max_seq_length"]
    assert 0 < seen < 0.6 * padded_upper


def test_inferred_max_seq_length_is_recorded(trained):
    home, _ = trained
    events = read_events(only_run(home)["run_dir"])
    started = events[0]
    assert started["max_seq_length_inferred"] is True
    longest = started["token_stats"]["max"]
    assert started["max_seq_length"] == -(-longest // 8) * 8
    assert events[-1]["max_seq_length"] == started["max_seq_length"]


def test_invalid_config_exits_nonzero_with_the_reason(tmp_path, demo_model):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model_name": str(demo_model), "dataset": "x.jsonl",
                                "provider": "unsloth", "max_seq_length": -1, "lora_r": 0}))
    result = run_cli(["train", str(path)], tmp_path)
    assert result.returncode == 2
    assert "max_seq_length cannot be -1 with the unsloth provider" in result.stderr
    assert "lora_r: must be at least 1" in result.stderr


def test_bad_data_fails_before_the_model_loads(tmp_path, demo_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n')
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model_name": str(demo_model), "dataset": str(bad)}))
    result = run_cli(["train", str(path)], tmp_path)
    assert result.returncode == 1
    assert f"{bad}: malformed JSON on line 2" in result.stderr
    events = read_events(only_run(tmp_path)["run_dir"])
    assert [e["type"] for e in events] == ["failed"]  # no started: no model was loaded
    assert events[0]["error_type"] == "data"


def test_too_small_data_set_fails_before_the_model_loads(tmp_path, demo_model):
    small = tmp_path / "small.jsonl"
    small.write_text('{"text": "one"}\n{"text": "two"}\n')
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model_name": str(demo_model), "dataset": str(small),
                                "per_device_train_batch_size": 4}))
    result = run_cli(["train", str(path)], tmp_path)
    assert result.returncode == 1 and "fewer than one batch of 4" in result.stderr
    assert [e["type"] for e in read_events(only_run(tmp_path)["run_dir"])] == ["failed"]


@pytest.mark.slow  # fast guard: test_jobs.py's Ctrl-C test
def test_stop_is_graceful_and_saves_the_adapter(tmp_path, tiny_config):
    """Ctrl-C (SIGINT) on `modelforge train`: the trainer stops at the next step, saves the
    adapter, and the run is recorded as stopped."""
    import signal

    path = tmp_path / "c.json"
    path.write_text(json.dumps(tiny_config(max_steps=2000)))
    env = {**os.environ, "MODELFORGE_HOME": str(tmp_path)}
    # Ctrl-C as in a terminal: a test runner started in the background (`cmd &`) ignores
    # SIGINT, and a child would inherit that and never see the signal
    proc = subprocess.Popen([MODELFORGE, "train", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = RunRegistry(tmp_path).list()
        if runs and any(e["type"] == "progress" for e in read_events(runs[0]["run_dir"])):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    run = only_run(tmp_path)
    assert run["status"] == "stopped"
    events = read_events(run["run_dir"])
    assert events[-1]["type"] == "stopped" and events[-1]["steps"] < 2000
    assert (Path(run["run_dir"]) / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.slow  # fast guard: test_demo_model.py, test_loss_falls_over_the_steps
def test_readme_demo_as_written(tmp_path, pretrained_demo):
    """The README's snippet, run from a directory of its own, on the real pre-trained demo model
    (the weights shipped in the package) and a real 60-step LoRA
    run: the loss falls by 25% or more (the first 5 steps' mean against the last 10 steps', the
    README's measure), and the Playground's greedy answers with the adapter differ from the base
    model's. The demo model lands under the data directory's models/, so the Playground of a
    server on that data directory can load the run (a model in ./demo-model was refused there)."""
    from modelforge_ui.security import check_run_model_policy
    from modelforge_ui.settings import Settings

    home = tmp_path / "home"
    made = run_cli(["demo-model", "--config", "config.json"], home, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    assert f"demo model written to {home / 'models' / 'demo'}" in made.stdout
    again = run_cli(["demo-model", "--config", "config.json"], home, cwd=tmp_path)
    assert "demo model already in" in again.stdout  # built once, kept
    result = run_cli(["train", "config.json"], home, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = only_run(home)
    assert run["config"]["model_name"] == str(home / "models" / "demo")
    check_run_model_policy(run["config"], Settings(data_dir=home))  # playable: no refusal
    losses = [e["loss"] for e in read_events(run["run_dir"]) if e["type"] == "progress"]
    assert len(losses) == 60
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert last <= 0.75 * first, (first, last, losses)  # README: 4.71 -> 2.76
    with ThreadPoolExecutor(len(DEMO_PROMPTS)) as pool:  # a Playground process each, at once
        answers = list(pool.map(lambda prompt: play(run["run_dir"], prompt), DEMO_PROMPTS))
    assert all(a["adapter"] != a["base"] for a in answers), answers
    assert any(a["adapter"].strip() for a in answers), answers  # not only empty answers


# The first three prompts of the bundled instructions.jsonl, as a user would try them.
DEMO_PROMPTS = [json.loads(line)["prompt"] for line in
                SAMPLE_SFT.read_text(encoding="utf-8").splitlines()[:3]]


def play(run_dir, prompt: str) -> dict:
    """The Playground's answers, {"adapter": text, "base": text}, greedy, from its real tool."""
    out = subprocess.run([sys.executable, "-m", "trainers.tools.playground", str(run_dir)],
                         input=json.dumps({"prompt": prompt, "max_new_tokens": 24}),
                         capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert out.returncode == 0, lines[-1:] or out.stderr[-2000:]
    return {m: "".join(x.get("text", "") for x in lines if x.get("model") == m)
            for m in ("adapter", "base")}
