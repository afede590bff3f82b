"""The REST API over real HTTP: a `modelforge run` server on loopback, real worker processes
training the demo model."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from live_server import wait_status
from trainers.config import check_config
from trainers.errors import ConfigError
from trainers.tools.demo import SAMPLE_SFT


def test_health_docs_and_openapi(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["auth_required"] is False
    assert health["torch_in_server"] is False  # torch loads in workers only
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = client.get("/openapi.json").json()
    for path in ("/api/start_training", "/api/runs", "/api/runs/{run_id}",
                 "/api/runs/{run_id}/events", "/api/runs/{run_id}/stop",
                 "/api/runs/{run_id}/adapter", "/api/datasets", "/api/datasets/preview",
                 "/api/health", "/api/doctor"):
        assert path in spec["paths"], path
    body = spec["paths"]["/api/start_training"]["post"]["requestBody"]
    assert "model_name" in body["content"]["application/json"]["schema"]["properties"]


def test_train_follow_download_rename_delete(client, tiny_config):
    response = client.post("/api/start_training", json=tiny_config(max_steps=4))
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert response.headers["location"] == f"/api/runs/{run_id}"

    # follow the events incrementally until the run ends: no gaps, no repeats
    seen, after = [], 0
    while True:
        page = client.get(f"/api/runs/{run_id}/events", params={"after": after}).json()
        seen += page["events"]
        after = page["next_after"]
        if page["status"] in ("succeeded", "failed", "stopped") and not page["events"]:
            break
    assert [e["seq"] for e in seen] == list(range(len(seen)))
    types = [e["type"] for e in seen]
    assert types[0] == "started" and types[-1] == "finished", types
    assert [e["step"] for e in seen if e["type"] == "progress"] == [1, 2, 3, 4]

    run = client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded", run["summary"]
    assert run["progress"]["step"] == 4 and run["summary"]["steps"] == 4
    assert run["config"]["max_steps"] == 4 and run["started_at"] <= run["finished_at"]
    assert run_id in [r["id"] for r in client.get("/api/runs").json()["runs"]]

    download = client.get(f"/api/runs/{run_id}/adapter")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    files = zipfile.ZipFile(io.BytesIO(download.content))
    adapter_dir = Path(run["run_dir"]) / "adapter"
    assert files.read("adapter_model.safetensors") == \
        (adapter_dir / "adapter_model.safetensors").read_bytes()
    assert json.loads(files.read("adapter_config.json"))["r"] == 8

    assert "loss" in client.get(f"/api/runs/{run_id}/log").text

    renamed = client.patch(f"/api/runs/{run_id}", json={"name": "my first run"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "my first run"
    assert client.patch(f"/api/runs/{run_id}", json={"name": ""}).status_code == 422

    assert client.delete(f"/api/runs/{run_id}").json() == {"deleted": run_id}
    assert not Path(run["run_dir"]).exists()
    gone = client.get(f"/api/runs/{run_id}")
    assert gone.status_code == 404 and gone.json()["error_type"] == "not_found"
    assert client.delete(f"/api/runs/{run_id}").status_code == 404


BAD_CONFIGS = [
    {"model_name": "x", "dataset": "d.jsonl", "lora_rr": 8},               # unknown field
    {"model_name": "x", "dataset": "d.jsonl", "lora_r": "sixteen"},        # wrong type
    {"model_name": "x", "dataset": "d.jsonl", "provider": "tensorflow"},   # not an option
    {"dataset": "d.jsonl", "learning_rate": 5, "bf16": True, "fp16": True},  # several rules
    {"model_name": "x", "dataset": "d.jsonl", "strategy": "qlora", "use_4bit": False},
]


@pytest.mark.parametrize("config", BAD_CONFIGS)
def test_invalid_config_gets_422_with_the_cli_messages(client, config, tmp_path):
    response = client.post("/api/start_training", json=config)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_type"] == "config"
    fields = check_config(config)  # the same problems, field by field
    assert body["problems"][:len(fields)] == fields
    missing = body["problems"][len(fields):]  # and, beside them, the missing data file
    assert [p["field"] for p in missing] == ["dataset"]
    assert "does not exist" in missing[0]["message"]
    # ...and the CLI prints the same sentences
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    cli = subprocess.run([sys.executable, "-m", "modelforge_ui.cli", "train", str(path),
                          "--data-dir", str(tmp_path / "home")],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    for problem in fields:
        assert f"{problem['field']}: {problem['message']}" in cli.stderr
    assert "dataset: file d.jsonl does not exist" in cli.stderr
    assert "pydantic" not in response.text.lower()


def test_the_curl_example_from_the_issue(client, tmp_path, server):
    """The documented curl body, verbatim except for the data set path (which must be under an
    allowed root). Without a network the hub model cannot load: accepted, then failed with a
    diagnosis that says so and how to fix it."""
    dataset = Path(server.data_dir) / "datasets" / "dataset.jsonl"
    dataset.write_bytes(SAMPLE_SFT.read_bytes())
    body = ('{"provider": "unsloth", "model_name": "meta-llama/Llama-3.2-3B", '
            '"max_seq_length": 2048,\n       "task": "text-generation", "strategy": "sft", '
            f'"dataset": "{dataset}",\n       "num_train_epochs": 3}}')
    response = client.post("/api/start_training", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    run = wait_status(client, response.json()["run_id"])
    assert run["status"] == "failed"
    summary = run["summary"]
    assert summary["error_type"] == "model_not_available", summary
    assert "HF_HUB_OFFLINE" in summary["hint"] and "allowed root" in summary["hint"]


def test_upload_then_preview_without_importing_torch(client, demo_model):
    upload = client.post("/api/datasets", files={
        "file": ("../../my data.jsonl", SAMPLE_SFT.read_bytes(), "application/octet-stream")})
    assert upload.status_code == 201, upload.text
    stored = Path(upload.json()["path"])
    assert stored.name == "my_data.jsonl" and stored.parent.name == "datasets"  # no traversal
    assert stored.read_bytes() == SAMPLE_SFT.read_bytes()
    again = client.post("/api/datasets", files={"file": ("my data.jsonl", b'{"text": "x"}\n')})
    assert again.json()["name"] == "my_data-1.jsonl"  # an upload never overwrites another
    assert {"my_data.jsonl", "my_data-1.jsonl"} <= \
        {d["name"] for d in client.get("/api/datasets").json()["datasets"]}

    # a relative name means a file in the upload directory
    preview = client.post("/api/datasets/preview", json={
        "dataset": "my_data.jsonl", "n": 2, "model_name": str(demo_model), "max_seq_length": 64})
    assert preview.status_code == 200, preview.text
    result = preview.json()
    assert result["format"] == "prompt_completion" and len(result["examples"]) == 2
    assert result["token_stats"]["max_seq_length"] == 64 and result["token_stats"]["truncated"] > 0
    assert client.get("/api/health").json()["torch_in_server"] is False

    bad = client.post("/api/datasets", files={"file": ("bad.jsonl", b'{"prompt": "a"}\n{oops\n')})
    broken = client.post("/api/datasets/preview", json={"dataset": bad.json()["path"]})
    assert broken.status_code == 422
    assert "line 2" in broken.json()["message"] and broken.json()["hint"]

    wrong = client.post("/api/datasets", files={"file": ("notes.txt", b"hello")})
    assert wrong.status_code == 422 and ".jsonl" in wrong.json()["message"]
    missing = client.post("/api/datasets", data={"nothing": "here"})
    assert missing.status_code == 422 and missing.json()["problems"][0]["field"] == "file"


def test_the_dashboard_previews_with_the_apis_request_model():
    """The dashboard asks from its form's config what the API is sent: one model, one set of
    defaults (the training config's)."""
    from trainers.tools.preview import PreviewRequest

    form = {"dataset": "d.jsonl", "model_name": "m", "max_seq_length": -1,
            "dataset_split": "test", "strategy": "dpo", "lora_r": 8}
    request = PreviewRequest.from_config(form)
    assert request == PreviewRequest(dataset="d.jsonl", model_name="m", max_seq_length=None,
                                     split="test", strategy="dpo")  # -1: nothing to count
    assert PreviewRequest(dataset="d.jsonl").model_dump() == {
        "dataset": "d.jsonl", "n": 5, "model_name": "", "max_seq_length": None,
        "split": "train", "column_mapping": {}, "strategy": "sft", "completion_only_loss": True,
        "trust_remote_code": False}
    with pytest.raises(ConfigError) as err:
        PreviewRequest.from_config({"dataset": "d.jsonl", "dataset_split": 3})
    assert err.value.problems[0]["field"] == "dataset_split"


@pytest.mark.slow  # fast guard: test_dashboard.py's environment report
def test_doctor_over_http_and_cli(client):
    # the CLI's checks run while the server's do (each probes torch in its own process)
    cli = subprocess.Popen([sys.executable, "-m", "modelforge_ui.cli", "doctor", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    report = client.get("/api/doctor").json()
    names = {c["name"]: c for c in report["checks"]}
    for name in ("operating system", "python", "torch", "transformers", "peft", "trl",
                 "unsloth", "bitsandbytes", "flash-attn", "xformers", "triton"):
        assert name in names, name
    assert all(c["status"] in ("ok", "warn", "error") for c in report["checks"])
    assert all(c["fix"] for c in report["checks"] if c["status"] != "ok")
    import torch  # the test process may; the server must not

    assert names["torch"]["value"].startswith(torch.__version__)
    assert client.get("/api/health").json()["torch_in_server"] is False

    stdout, _ = cli.communicate(timeout=300)
    checks = json.loads(stdout)
    assert {c["name"] for c in checks} == set(names)
    assert cli.returncode == (1 if any(c["status"] == "error" for c in checks) else 0)


def test_config_check_endpoint(client, tiny_config):
    ok = client.post("/api/config/check", json=tiny_config()).json()
    assert ok["ok"] is True and ok["config"]["dataset"] == str(SAMPLE_SFT.resolve())
    bad = client.post("/api/config/check", json=tiny_config(lora_r=0)).json()
    assert bad == {"ok": False, "problems": check_config(tiny_config(lora_r=0))}
    refused = client.post("/api/config/check", json=tiny_config(dataset="/etc/hosts")).json()
    assert refused["ok"] is False and refused["problems"][0]["field"] == "dataset"
