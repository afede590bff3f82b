"""The dashboard's main events through gradio_client, against the real server (`modelforge run`):
validate, presets, the unsloth sequence-length question, start and follow a run, history and
details, adapter download, troubleshooting (environment report, config checker, failed-run
diagnosis, bundle), rename and delete. Plus the generated form on its own."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from typing import Literal

import gradio as gr
import httpx
import pytest
from gradio_client import Client

from modelforge_ui.form import ConfigForm, field_specs
from trainers.config import PRESETS, TrainConfig, _field, check_config
from trainers.tools.demo import SAMPLE_DIR, SAMPLE_PREFERENCES, SAMPLE_SFT
from ui_server import free_port, modelforge_run_args, running_server

FORM = ConfigForm()


# --- the generated form, without a server --------------------------------------------------------

class ConfigWithANewField(TrainConfig):
    new_knob: Literal["a", "b"] = _field("a", "lora", "A field the form has never heard of.")
    new_flag: bool = _field(False, "brand-new-group", "Another one, in a new group.")


def test_every_field_is_in_the_form_and_a_new_one_appears_without_ui_code():
    assert [s.name for s in field_specs()] == list(TrainConfig.model_fields)
    form = ConfigForm(ConfigWithANewField)
    with gr.Blocks():
        components = form.render()
    new_knob, new_flag = components[-2], components[-1]
    assert isinstance(new_knob, gr.Dropdown) and new_knob.label == "new_knob"
    assert isinstance(new_flag, gr.Checkbox)
    kinds = {s.name: type(c).__name__ for s, c in zip(form.specs, components)}
    assert kinds["provider"] == "Dropdown" and kinds["packing"] == "Checkbox"
    assert kinds["lora_r"] == "Number" and kinds["target_modules"] == "Textbox"


def test_form_values_round_trip_and_bad_text_fields_are_reported_with_schema_problems():
    data = {"model_name": "m", "dataset": "d.jsonl", "target_modules": ["q_proj", "v_proj"],
            "column_mapping": {"prompt": "question"}, "lora_r": 8}
    values = FORM.from_dict(data)
    cfg = FORM.validate(values)
    assert cfg.target_modules == ["q_proj", "v_proj"]
    assert cfg.column_mapping == {"prompt": "question"}
    values[FORM.index("column_mapping")] = "{prompt: question"
    values[FORM.index("lora_r")] = 0
    with pytest.raises(Exception) as err:
        FORM.validate(values)
    fields = [p["field"] for p in err.value.problems]
    assert fields == ["column_mapping", "lora_r"]


def test_report_to_is_a_checkbox_group_that_reads_every_form_of_it():
    spec = next(s for s in FORM.specs if s.name == "report_to")
    assert spec.kind == "multichoice" and "wandb" in spec.choices
    base = {"model_name": "m", "dataset": "d.jsonl"}
    for given, shown in (("tensorboard", ["tensorboard"]), ("none", []),
                         (["tensorboard", "wandb"], ["tensorboard", "wandb"])):
        values = FORM.from_dict({**base, "report_to": given})
        assert values[FORM.index("report_to")] == shown
    assert FORM.to_dict(FORM.from_dict({**base, "report_to": "wandb"}))[0]["report_to"] == \
        ["wandb"]


# --- the running app -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("dashboard-data")
    port = free_port()
    log = data_dir / "server.log"
    args = modelforge_run_args(port, data_dir, demo_model, SAMPLE_DIR)
    with running_server(args, log, port=port) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    client = Client(server + "/", verbose=False)
    yield client
    client.close()  # ends its heartbeat stream, so the server can shut down at once


def form_values(demo_model, **fields) -> list:
    base = {"model_name": str(demo_model), "dataset": str(SAMPLE_SFT), "max_seq_length": 64,
            "max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 2e-3,
            "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
    return FORM.from_dict({**base, **fields})


def wait_for(client, statuses=("succeeded", "failed", "stopped"), timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = client.predict(api_name="/refresh_run")
        if any(f"**{s}**" in out[0] for s in statuses):
            return out
        time.sleep(1)
    raise AssertionError(f"run did not end in {timeout} s: {out[0]}")


def test_validate_shows_every_problem_with_the_api_texts(client, server, demo_model):
    bad = {"model_name": str(demo_model), "dataset": str(SAMPLE_SFT), "lora_r": 0,
           "learning_rate": 5.0, "bf16": True, "fp16": True, "strategy": "qlora",
           "use_4bit": False}
    problems_md = client.predict(*FORM.from_dict(bad), api_name="/validate_config")[0]
    api_problems = httpx.post(f"{server}/api/config/check", json=bad).json()["problems"]
    expected = check_config(bad)
    assert [p["field"] for p in expected] == ["lora_r", "learning_rate", "bf16", "use_4bit"]
    assert api_problems == expected
    for problem in expected:
        assert f"**{problem['field']}**: {problem['message']}" in problems_md
    assert "4 problems to fix" in problems_md

    empty = client.predict(*FORM.from_dict({}), api_name="/validate_config")[0]
    assert '**model_name**: is required: add "model_name" to the config' in empty
    assert '**dataset**: is required: add "dataset" to the config' in empty


def test_valid_config_shows_yaml_and_the_cli_and_curl_commands(client, demo_model):
    out = client.predict(*form_values(demo_model), api_name="/validate_config")
    assert out[0].startswith("**The config is valid.**\n\n**GPU memory estimate:** peak about ")
    assert "no GPU found here" in out[0]  # the tests' machine has none: no verdict
    assert f"model_name: {demo_model}" in out[1]
    assert "modelforge train config.json" in out[2]
    assert "curl -X POST http://127.0.0.1:" in out[2] and "/api/start_training" in out[2]


def test_a_path_outside_the_allowed_roots_is_refused_before_start(client, demo_model, tmp_path):
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(SAMPLE_SFT.read_text())
    out = client.predict(*form_values(demo_model, dataset=str(outside)), api_name="/start_run")
    assert "outside the allowed roots" in out[0]


def test_presets_fill_the_form_and_keep_model_and_data(client, demo_model):
    values = form_values(demo_model, lora_r=4, packing=True)
    for name, preset in PRESETS.items():
        out = client.predict(*values, api_name=f"/preset_{name}")
        filled = dict(zip([s.name for s in FORM.specs], out[:-1]))
        for key, value in preset.items():
            assert filled[key] == value, (name, key)
        assert filled["model_name"] == str(demo_model) and filled["packing"] is True
        assert f"Preset **{name}** applied" in out[-1]
    out = client.predict(*values, api_name="/preset_memory")
    assert dict(zip([s.name for s in FORM.specs], out[:-1]))["lora_r"] == 16  # back to default


def test_switching_to_unsloth_asks_for_a_fixed_sequence_length(client):
    radio, seq = client.predict("unsloth", -1, api_name="/provider_changed")
    assert radio["visible"] is True and radio["value"] == "2048" and seq == 2048
    radio, seq = client.predict("unsloth", 1000, api_name="/provider_changed")
    assert radio["value"] == "1024" and seq == 1024
    radio, seq = client.predict("huggingface", 1024, api_name="/provider_changed")
    assert radio["visible"] is False


def test_preview_shows_format_examples_and_token_lengths(client, demo_model):
    info, table = client.predict(*form_values(demo_model), api_name="/preview_data")
    assert "**Format:** prompt_completion" in info and "rows:** 400" in info
    assert "| examples | min | median | p95 | max |" in info
    assert table["visible"] is True
    assert table["value"]["headers"][:2] == ["prompt", "completion"]
    assert len(table["value"]["data"]) == 5


def test_start_follow_history_details_and_adapter(client, demo_model):
    message, status = client.predict(*form_values(demo_model, name="ui run"),
                                     api_name="/start_run")
    run_id = message.split("`")[1]
    assert "ui run" in status
    out = wait_for(client)
    assert "**succeeded**" in out[0] and "step **4 / 4**" in out[0]
    loss = out[1]["value"]["data"]  # an update: the x range is the run's steps
    assert [row[0] for row in loss] == [1, 2, 3, 4] and all(row[1] > 0 for row in loss)
    assert len(out[2]["value"]["data"]) == 4  # tokens/s per step
    memory = out[3]  # no GPU here: the worker's resident memory, titled so (not GPU zeros)
    assert "no GPU" in memory["title"] and all(row[1] > 0 for row in memory["value"]["data"])
    assert "train" in out[4].lower()  # the log tail

    table, picked = client.predict(None, api_name="/history")
    row = next(r for r in table["data"] if r[0] == run_id)
    assert row[1:6] == ["ui run", "succeeded", "huggingface", Path(demo_model).name, "sft"]
    assert float(row[7].replace(",", "")) > 0  # tokens/s

    summary, config, events, log, name = client.predict(run_id, api_name="/run_details")
    assert json.loads(config)["max_steps"] == 4 and name == "ui run"
    assert [json.loads(line)["type"] for line in events.splitlines()][-1] == "finished"

    zip_path = client.predict(run_id, api_name="/download_adapter")
    with zipfile.ZipFile(zip_path) as zf:
        assert "adapter/adapter_config.json" in zf.namelist()


def test_failed_run_is_diagnosed_and_bundled(client, demo_model):
    # Preference pairs under strategy sft: valid config, but the worker refuses the data.
    message, _ = client.predict(*form_values(demo_model, dataset=str(SAMPLE_PREFERENCES)),
                                api_name="/start_run")
    run_id = message.split("`")[1]
    out = wait_for(client)
    assert "**failed**" in out[0] and "Fix:" in out[0]

    failed, _ = client.predict(api_name="/troubleshooting_runs")
    assert run_id in [choice[1] for choice in failed["choices"]]
    diagnosis, log = client.predict(run_id, api_name="/diagnose_run")
    assert diagnosis.startswith("**data**:") and "strategy sft needs" in diagnosis
    assert "**Fix:**" in diagnosis and "Traceback" in log

    bundle = client.predict(run_id, api_name="/diagnostic_bundle")
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        env = json.loads(zf.read("environment.json"))
    assert {"environment.json", "config.json", "events.jsonl", "train.log", "run.json"} <= names
    assert any(c["name"].lower().startswith("python") for c in env)


def test_environment_report_and_config_checker(client):
    table = client.predict(api_name="/environment_report")
    assert table["headers"] == ["check", "status", "value", "fix"]
    names = [row[0].lower() for row in table["data"]]
    assert any(n.startswith("python") for n in names) and "transformers" in names
    assert {row[1] for row in table["data"]} <= {"ok", "warn", "error"}

    result = client.predict("provider: unsloth\nmax_seq_length: -1\nlora_r: 0\n",
                            api_name="/check_config")
    for problem in check_config({"provider": "unsloth", "max_seq_length": -1, "lora_r": 0}):
        assert f"**{problem['field']}**: {problem['message']}" in result
    assert "not valid JSON" in client.predict('{"lora_r": ', api_name="/check_config")


@pytest.mark.slow  # fast guard: test_api.py's train/rename/delete test
def test_rename_and_delete(client, demo_model):
    # its own run (one that fails on its data at once), so no other test's runs matter
    message, _ = client.predict(*form_values(demo_model, dataset=str(SAMPLE_PREFERENCES)),
                                api_name="/start_run")
    run_id = message.split("`")[1]
    assert "**failed**" in wait_for(client)[0]
    table, picked = client.predict(run_id, "renamed run", api_name="/rename_run")
    assert next(r for r in table["data"] if r[0] == run_id)[1] == "renamed run"
    table, _ = client.predict(run_id, api_name="/delete_run")
    assert run_id not in [r[0] for r in table["data"]]


@pytest.mark.slow  # fast guard: test_model_policy.py's playground test
def test_playground_streams_both_models_and_export_merges(client, demo_model):
    message, _ = client.predict(*form_values(demo_model), api_name="/start_run")
    run_id = message.split("`")[1]
    assert "**succeeded**" in wait_for(client)[0]
    job = client.submit(run_id, "### Instruction:\nSay hi\n\n### Response:\n", 8, 0,
                        api_name="/generate")
    updates = list(job)  # every streamed (adapter, base, status) update
    adapter, base, status = job.result()
    assert status == "Done." and adapter and base
    assert len(updates) > 3  # streamed, not one answer at the end
    log, result = client.predict(run_id, "float16", "", "none", api_name="/export_model")
    assert result.startswith("**Merged model saved:**") and "loading" in log
    merged = Path(result.split("`")[1])
    assert (merged / "model.safetensors").is_file()
    assert (merged / "MODELFORGE_EXPORT.json").is_file()
    log, result = client.predict(run_id, "float16", "", "q8_0", api_name="/export_model")
    assert "converting to GGUF q8_0" in log and "**GGUF:**" in result
    gguf_file = Path(result.split("`")[3])
    assert gguf_file.read_bytes()[:4] == b"GGUF" and (gguf_file.parent / "Modelfile").is_file()
    _, result = client.predict(run_id, "float16", "me/model", "none", api_name="/export_model")
    assert "Cannot push to the Hub: HF_HUB_OFFLINE is set" in result  # said, not hidden


@pytest.mark.slow  # fast guard: test_benchmark.py's failing-provider test
def test_benchmark_from_the_dashboard(client, demo_model):
    from modelforge_ui.tabs.benchmark import spec_form

    form = spec_form()
    values = form.from_dict({"model": str(demo_model), "providers": ["huggingface"],
                             "modes": ["lora16"], "steps": 2, "warmup_steps": 1,
                             "repeats": 1, "max_seq_length": 64, "batch_size": 2, "optimizer": "adamw_torch",
                             "name": "ui bench"})
    message, picker = client.predict(*values, api_name="/run_benchmark")
    run_id = message.split("`")[1]
    assert picker["value"] == run_id
    deadline = time.time() + 300
    while time.time() < deadline:
        out = client.predict(run_id, api_name="/benchmark_results")
        if "**succeeded**" in out[0] or "**failed**" in out[0]:
            break
        time.sleep(2)
    status, table, speed, memory, curves, report, files = out[:7]
    assert "**succeeded**" in status and "huggingface-lora16-r1" in status
    assert table["headers"][:3] == ["variant", "tokens/s (whole measured time; CPU: not GPU "
                                           "speed)", "speedup"]
    assert table["data"][0][0] == "Hugging Face · 16-bit LoRA" and table["data"][0][-1] == "ok"
    assert "**16-bit LoRA: Hugging Face only**" in out[8]  # the verdict (State is not returned)
    assert speed["data"][0][0] == "huggingface · 16-bit LoRA" and speed["data"][0][1] > 0
    curves = curves.get("value", curves)  # an update: the plot's colors name every variant
    assert [row[1] for row in curves["data"]] == [1, 2, 3]  # warm-up + measured steps
    assert report.startswith("# Benchmark:")
    assert sorted(Path(f).name for f in files) == ["results.csv", "results.json", "results.md"]

    bad = form.from_dict({"model": str(demo_model), "steps": 0, "peak_tflops": "abc"})
    problems, _ = client.predict(*bad, api_name="/run_benchmark")
    assert "**peak_tflops**: got 'abc'" in problems and "**steps**: must be at least 1" in problems


def test_benchmark_quick_setting_keeps_the_model_and_says_what_it_gives_up(client, demo_model):
    from modelforge_ui.tabs.benchmark import spec_form
    from trainers.benchmark.spec import QUICK

    form = spec_form()
    typed = form.from_dict({"model": str(demo_model), "repeats": 3, "steps": 50,
                            "max_seq_length": 512})
    *values, note = client.predict(*typed, api_name="/benchmark_quick")
    spec = form.validate(values)
    assert {k: getattr(spec, k) for k in QUICK} == QUICK
    assert spec.model == str(demo_model) and spec.max_seq_length == 512  # the rest stays
    assert "It gives up: One run per variant, so no repeat check" in note
