"""Issue 15 over real HTTP: a `modelforge run` server in a subprocess (the worktree's code,
whatever PYTHONPATH the test runs under), no network. Every config problem at once from
/api/config/check, what Validate checks beyond the schema, GPU-only settings refused at submit,
/docs served without a CDN, a busy port refused in one line, a model path refused with the fix
that fits a model.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from live_server import PROJECT_ROOT, LiveServer
from trainers.tools.demo import SAMPLE_DIR, SAMPLE_SFT


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("new-user") / "data",
                     "--allowed-root", str(demo_model), "--allowed-root", str(SAMPLE_DIR),
                     "--allowed-root", str(tmp_path_factory.getbasetemp())).start()
    yield srv
    srv.close()


def test_config_check_reports_unknown_keys_and_rule_violations_at_once(client):
    body = {"provider": "unsloth", "max_seq_length": -1, "lora_r": 0, "lora_rank": 8,
            "colour": "blue", "model_name": "m", "dataset": "d.jsonl"}
    reply = client.post("/api/config/check", json=body).json()
    fields = [p["field"] for p in reply["problems"]]
    assert reply["ok"] is False
    assert fields == ["lora_rank", "colour", "lora_r", "max_seq_length", "dataset"]
    assert sum("Valid fields are:" in p["message"] for p in reply["problems"]) == 1
    start = client.post("/api/start_training", json=body)
    assert start.status_code == 422
    assert [p["field"] for p in start.json()["problems"]] == fields


def test_config_check_says_what_start_would_refuse(client, tiny_config, tmp_path):
    optimal = client.post("/api/config/check", params={"preset": "optimal"},
                          json=tiny_config()).json()
    assert optimal["ok"] is False
    assert [p["field"] for p in optimal["problems"]] == ["use_4bit"]
    assert "needs a CUDA GPU" in optimal["problems"][0]["message"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(SAMPLE_SFT.read_text(encoding="utf-8").split("\n", 1)[0] +
                   '\n{"prompt": "unfinished\n', encoding="utf-8")
    data = client.post("/api/config/check", json=tiny_config(dataset=str(bad))).json()
    assert data["ok"] is False and data["problems"][0]["field"] == "dataset"
    assert "malformed JSON on line 2" in data["problems"][0]["message"]

    good = client.post("/api/config/check", json=tiny_config()).json()
    assert good["ok"] is True


def test_a_gpu_only_setting_is_refused_at_submit_not_five_seconds_later(client, tiny_config):
    response = client.post("/api/start_training", json=tiny_config(use_4bit=True))
    assert response.status_code == 422, response.text
    assert response.json()["problems"][0]["field"] == "use_4bit"


def test_a_model_outside_the_roots_is_refused_with_the_fix_for_a_model(client, tiny_config,
                                                                        tmp_path_factory):
    outside = tmp_path_factory.getbasetemp().parent / "elsewhere-model"  # outside every root
    outside.mkdir(exist_ok=True)
    reply = client.post("/api/start_training", json=tiny_config(model_name=str(outside)))
    assert reply.status_code == 403, reply.text
    hint = reply.json()["hint"]
    assert "--allowed-root" in hint and "models" in hint and "POST /api/datasets" not in hint


def test_docs_work_without_a_network(client):
    """(Also the proof that the server runs this checkout: /docs-assets is new in it.)"""
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn.jsdelivr" not in page.text and "/docs-assets/swagger-ui-bundle.js" in page.text
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and b"SwaggerUIBundle" in script.content
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


def test_a_busy_port_is_one_plain_line(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "modelforge_ui.cli", "run", "--port",
                              str(port), "--data-dir", str(tmp_path / "data"), "--no-dashboard"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2
    assert f"port {port} is in use" in out.stderr and "pass --port" in out.stderr
    assert "serving" not in out.stdout and "Errno" not in out.stderr
