"""The benchmark through the REST API, over real HTTP: POST /api/benchmarks queues the spec of
the Benchmark tab and `modelforge bench` in the runs' queue; GET /api/benchmarks/{id} gives
the status, the verdict, the table and the report; its events read as a run's do. The benchmark
queued here is test_benchmark_best.py's real run of padding "best" with the plain script: one
benchmark proves both (they were two, 90 s of the slow tier)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from live_server import wait_status

HAS_UNSLOTH = importlib.util.find_spec("unsloth") is not None
# 1 warm-up + 2 measured steps of short rows (tests/test_benchmark.py's TINY)
TINY = {"max_seq_length": 96, "batch_size": 2, "steps": 2, "warmup_steps": 1, "repeats": 1,
        "lora_r": 4, "lora_alpha": 8, "modes": ["lora16"]}
PROVIDERS = ["huggingface", "unsloth"] if HAS_UNSLOTH else ["huggingface"]


@pytest.mark.slow  # fast guards: the bad-spec test below; test_benchmark_best.py's decisions
def test_a_best_benchmark_queued_followed_and_read_over_http(client, demo_model):
    """Over HTTP: queued, followed, read. The run itself (test_benchmark_best.py's promise):
    padding "best" runs both providers at their own best settings, says what a library turned
    off by itself, and the plain script runs what the engine ran."""
    response = client.post("/api/benchmarks", json={"model": str(demo_model),
                                                    "providers": PROVIDERS, **TINY,
                                                    "padding": "best", "check_plain": True})
    assert response.status_code == 202, response.text
    bench_id = response.json()["benchmark_id"]
    assert response.headers["location"] == f"/api/benchmarks/{bench_id}"
    record = wait_status(client, bench_id)  # the same queue and record as a training run
    assert record["kind"] == "benchmark" and record["source"] == "api"
    assert record["status"] == "succeeded", record["summary"]

    detail = client.get(f"/api/benchmarks/{bench_id}").json()
    assert detail["status"] == "succeeded" and detail["complete"] is True
    assert [(row["provider"], row["mode"]) for row in detail["table"]] == \
        [(provider, "lora16") for provider in PROVIDERS]
    assert all(row["tokens_per_s"] > 0 for row in detail["table"])
    assert set(detail["matching"]) == {"lora16"}
    assert detail["verdict"].startswith("### Verdict") and "16-bit LoRA" in detail["verdict"]
    assert "| provider" in detail["report"]
    assert detail["spec"]["steps"] == 2 and detail["spec"]["providers"] == PROVIDERS
    assert detail["spec"]["padding"] == "best" and detail["spec"]["check_plain"] is True

    page = client.get(f"/api/benchmarks/{bench_id}/events", params={"after": 0}).json()
    kinds = [e["type"] for e in page["events"]]
    assert kinds.count("variant_finished") == len(PROVIDERS) and kinds[-1] == "finished"
    assert page["next_after"] == len(page["events"]) and page["status"] == "succeeded"
    listed = client.get("/api/benchmarks").json()
    assert bench_id in [b["id"] for b in listed["benchmarks"]]

    # the run: each provider at its best, and the plain script alike
    run_dir = Path(record["run_dir"])
    summary = json.loads((run_dir / "results.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["ok"] * len(PROVIDERS)
    assert summary["matching"]["lora16"]["verdict"].startswith("each at its best")
    assert summary["matching"]["lora16"]["matched"] is False
    assert set(summary["best_settings"]) == {f"{p}-lora16" for p in PROVIDERS}
    for run in summary["runs"]:
        assert run["best"] == summary["best_settings"][f"{run['provider']}-lora16"]
    runs = {r["provider"]: r for r in summary["runs"]}
    assert runs["huggingface"]["effective"]["padding_free"] is True
    # what a library turns off by itself is said, not hidden (Unsloth's CPU backend pads)
    applied = next(c for c in summary["matching"]["lora16"]["checks"]
                   if c["check"] == "each ran its best settings")
    assert applied["ok"] == all(r["effective"]["padding_free"] for r in summary["runs"])
    if "unsloth" in runs and not runs["unsloth"]["effective"]["padding_free"]:
        assert "unsloth-lora16-r1: padding-free asked" in applied["detail"]
    settings = json.loads((run_dir / "plain" / "settings-lora16.json").read_text())
    assert set(settings["provider_overrides"]) == set(PROVIDERS)
    checks = {c["check"]: c["ok"] for c in summary["checks"]}
    for provider in PROVIDERS:  # the plain script ran what the engine ran
        assert checks[f"plain script: same trainer settings, {provider} lora16"]
        assert checks[f"plain script: same token counts, {provider} lora16"]
    assert "## Each at its best" in detail["report"]
    assert "Liger kernels off (no GPU" in detail["report"]


def test_a_bad_spec_gets_the_forms_messages(client, demo_model):
    queued_before = client.get("/api/benchmarks").json()["total"]
    typo = client.post("/api/benchmarks", json={"model": str(demo_model), "stepz": 5})
    assert typo.status_code == 422
    assert typo.json()["problems"][0]["field"] == "stepz"
    assert "Did you mean 'steps'" in typo.json()["problems"][0]["message"]
    gpu_only = client.post("/api/benchmarks", json={"model": str(demo_model),
                                                    "modes": ["qlora4"]})
    assert gpu_only.status_code == 422  # the server has no GPU: refused before the queue
    assert gpu_only.json()["problems"][0]["field"] == "modes"
    outside = client.post("/api/benchmarks", json={"model": "/etc"})
    assert outside.status_code == 403 and outside.json()["error_type"] == "path_not_allowed"
    assert client.post("/api/benchmarks", content=b"[1]",
                       headers={"content-type": "application/json"}).status_code == 422
    assert client.get("/api/benchmarks").json()["total"] == queued_before  # none was queued


def test_an_unknown_or_training_id_is_404(client, tiny_config):
    missing = client.get("/api/benchmarks/nope")
    assert missing.status_code == 404 and "GET /api/benchmarks" in missing.json()["hint"]
    run_id = client.post("/api/start_training", json=tiny_config(max_steps=1)).json()["run_id"]
    assert client.get(f"/api/benchmarks/{run_id}").status_code == 404
    assert client.get(f"/api/benchmarks/{run_id}/events").status_code == 404
    wait_status(client, run_id)


def test_the_openapi_docs_list_the_benchmark_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/benchmarks", "/api/benchmarks/{benchmark_id}",
            "/api/benchmarks/{benchmark_id}/events",
            "/api/benchmarks/{benchmark_id}/stop"} <= set(paths)
    body = paths["/api/benchmarks"]["post"]["requestBody"]["content"]["application/json"]
    assert "steps" in body["schema"]["properties"]
