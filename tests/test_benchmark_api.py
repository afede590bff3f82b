"""The benchmark through the REST API, over real HTTP: POST /api/benchmarks queues the spec of
the Benchmark tab and `modelforge bench` in the runs' queue; GET /api/benchmarks/{id} gives
the status, the verdict, the table and the report; its events read as a run's do."""

from __future__ import annotations

import importlib.util

import pytest
from live_server import wait_status

HAS_UNSLOTH = importlib.util.find_spec("unsloth") is not None
# 1 warm-up + 2 measured steps of short rows (tests/test_benchmark.py's TINY)
TINY = {"max_seq_length": 96, "batch_size": 2, "steps": 2, "warmup_steps": 1, "repeats": 1,
        "lora_r": 4, "lora_alpha": 8, "modes": ["lora16"]}
PROVIDERS = ["huggingface", "unsloth"] if HAS_UNSLOTH else ["huggingface"]


@pytest.mark.slow
def test_a_benchmark_queued_followed_and_read_over_http(client, demo_model):
    response = client.post("/api/benchmarks", json={"model": str(demo_model),
                                                    "providers": PROVIDERS, **TINY})
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

    page = client.get(f"/api/benchmarks/{bench_id}/events", params={"after": 0}).json()
    kinds = [e["type"] for e in page["events"]]
    assert kinds.count("variant_finished") == len(PROVIDERS) and kinds[-1] == "finished"
    assert page["next_after"] == len(page["events"]) and page["status"] == "succeeded"
    listed = client.get("/api/benchmarks").json()
    assert bench_id in [b["id"] for b in listed["benchmarks"]]


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
