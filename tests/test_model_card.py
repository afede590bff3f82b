"""The adapter as a Hugging Face-ready folder with a model card, from a real run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.events import read_events
from trainers.runs.registry import RunRegistry
from trainers.tools import model_card

pytestmark = pytest.mark.slow
MODELFORGE = str(Path(sys.executable).parent / "modelforge")


@pytest.fixture(scope="module")
def finished(shared_run):
    """The session's shared run (tests/conftest.py): the export below adds its folder there."""
    home, record, _ = shared_run
    return home, record


def test_the_card_says_base_model_data_settings_and_losses(finished, demo_model):
    _, record = finished
    summary = record["summary"]
    card = model_card.render_card(record["run_dir"], record["name"])
    assert card.startswith("---\nlibrary_name: peft\n")
    assert "base_model:" not in card.split("---")[1]  # a local folder is not a Hub id
    assert record["name"] == "shared sft run" and "# shared sft run" in card
    assert f"`{demo_model}` (a local folder" in card
    started = next(e for e in read_events(record["run_dir"]) if e["type"] == "started")
    assert started["num_train"] + started["num_eval"] + \
        started["token_stats"]["left_out_no_completion_token"] == 400  # the sample's rows
    assert "instructions.jsonl" in card and \
        f"{started['num_train']} for training, {started['num_eval']} held out" in card
    assert "| LoRA r / alpha / dropout | 8 / 16.0 / 0.0 |" in card
    assert "| learning rate | 0.002 (linear" in card
    assert f"/ {summary['final_loss']:.4g} |" in card
    assert f"| best eval loss | {summary['best_eval_loss']:.4g} at step " \
           f"{summary['best_eval_step']} |" in card
    assert "unsloth" not in card.split("Library versions:")[1].split("\n")[0]
    assert "hf upload USER/REPO ." in card and "needs a network" in card


def test_a_hub_base_model_goes_in_the_metadata(finished, tmp_path):
    _, record = finished
    import json
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(record["run_dir"], run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config.update(model_name="meta-llama/Llama-3.2-1B", dataset="tatsu-lab/alpaca")
    (run_dir / "config.json").write_text(json.dumps(config))
    # the finished event names the adapter's folder in the original run: point it here
    events = (run_dir / "events.jsonl").read_text().replace(record["run_dir"], str(run_dir))
    (run_dir / "events.jsonl").write_text(events)
    front = model_card.render_card(run_dir).split("---")[1]
    assert "base_model: meta-llama/Llama-3.2-1B" in front
    assert "datasets:\n- tatsu-lab/alpaca" in front


def test_the_folder_loads_with_peft_and_the_cli_writes_it(finished, demo_model):
    home, record = finished
    env = {**os.environ, "MODELFORGE_HOME": str(home)}
    out = subprocess.run([MODELFORGE, "export-adapter", record["id"]], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    folder = Path(record["run_dir"]) / model_card.HF_ADAPTER_DIR
    assert str(folder) in out.stdout
    names = {p.name for p in folder.iterdir()}
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors",
            "tokenizer.json"} <= names and "training_args.bin" not in names
    adapter = Path(record["run_dir"]) / "adapter"
    assert (folder / "adapter_model.safetensors").read_bytes() == \
        (adapter / "adapter_model.safetensors").read_bytes()
    assert (folder / "README.md").read_text().startswith("---\nlibrary_name: peft")

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(demo_model)),
                                      str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ids = tokenizer("Hello", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == model.config.vocab_size

    taken = subprocess.run([MODELFORGE, "export-adapter", record["id"], "--out", str(adapter)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert taken.returncode == 2 and "is not empty" in taken.stderr


def test_no_card_without_an_adapter(tmp_path):
    registry = RunRegistry(tmp_path)
    run = registry.create(None, source="test", config_dict={"model_name": "m", "dataset": "d"})
    (Path(run["run_dir"]) / "events.jsonl").write_text('{"type": "failed", "error_type": "x", '
                                                       '"message": "m", "time": 1}\n')
    with pytest.raises(model_card.CardError, match="not finished training"):
        model_card.render_card(run["run_dir"])
    assert read_events(run["run_dir"])[0]["type"] == "failed"
