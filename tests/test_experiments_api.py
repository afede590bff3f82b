"""Resume, compare and tracker errors over real HTTP (a `modelforge run` server, real workers),
and `modelforge train --resume`."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from live_server import slow_config, start_run, wait_event, wait_status

pytestmark = pytest.mark.slow
MODELFORGE = str(Path(sys.executable).parent / "modelforge")
STEPS = 8
LOADED_S = 900  # a machine shared with other jobs can be five times slower than idle
# two jobs at once on the CPU (a documented setting): the runs compared here train side by side;
# the queue's default of one job at a time is test_faults.py's 50 concurrent submits
SERVER_ENV = {"MODELFORGE_JOBS_PER_DEVICE": "2"}


@pytest.fixture(scope="module")
def two_runs(server, demo_model):
    """Two finished runs that differ in learning_rate and eval_split."""
    from trainers.tools.demo import SAMPLE_SFT

    base = {"provider": "huggingface", "model_name": str(demo_model), "max_seq_length": 128,
            "dataset": str(SAMPLE_SFT), "max_steps": 4, "per_device_train_batch_size": 4,
            "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "logging_steps": 1}
    with server.client() as c:
        a = start_run(c, {**base, "learning_rate": 2e-3, "name": "lr 2e-3"})
        b = start_run(c, {**base, "learning_rate": 5e-3, "eval_split": 0.1, "eval_steps": 2,
                          "name": "lr 5e-3 with eval"})
        for run_id in (a, b):
            assert wait_status(c, run_id)["status"] == "succeeded"
    return a, b


def test_compare_two_runs(client, two_runs):
    a, b = two_runs
    response = client.get("/api/compare", params={"ids": f"{a},{b}"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert [r["id"] for r in data["runs"]] == [a, b]
    fields = {row["field"]: row["values"] for row in data["differing"]}
    assert fields["learning_rate"] == {a: 0.002, b: 0.005}
    assert fields["eval_split"] == {a: 0.0, b: 0.1} and "eval_steps" in fields
    assert "name" not in fields and "lora_r" not in fields  # the same in both: not shown
    run_a, run_b = data["runs"]
    assert [p[0] for p in run_a["curves"]["loss"]] == [1, 2, 3, 4]
    assert run_a["curves"]["eval_loss"] == [] and [p[0] for p in run_b["curves"]["eval_loss"]] \
        == [2, 4]
    assert len(run_a["curves"]["tokens_per_s"]) == 4
    assert len(run_a["curves"]["memory_gib"]) == 4  # no GPU here: the worker's resident memory
    for run in data["runs"]:
        out = run["outcomes"]
        assert out["status"] == "succeeded" and out["steps"] == 4
        assert out["time_s"] > 0 and out["tokens_per_s"] > 0 and out["peak_rss_gib"] > 0
        assert out["final_loss"] == run["curves"]["loss"][-1][1]
    assert run_b["outcomes"]["best_eval_loss"] == min(v for _, v in run_b["curves"]["eval_loss"])
    assert run_a["outcomes"]["best_eval_loss"] is None
    # repeated ids=... work as well as a comma-separated list
    again = client.get(f"/api/compare?ids={a}&ids={b}").json()
    assert [r["id"] for r in again["runs"]] == [a, b]


def test_compare_refuses_bad_ids_with_a_clear_4xx(client, two_runs):
    a, _ = two_runs
    one = client.get("/api/compare", params={"ids": a})
    assert one.status_code == 422 and "at least two run ids" in one.json()["message"]
    assert client.get("/api/compare", params={"ids": f"{a},{a}"}).status_code == 422
    missing = client.get("/api/compare", params={"ids": f"{a},nope-123"})
    assert missing.status_code == 404 and "'nope-123'" in missing.json()["message"]
    none = client.get("/api/compare")
    assert none.status_code == 422 and none.json()["problems"][0]["field"] == "ids"


def test_resume_refuses_a_finished_run_and_an_unknown_one(client, two_runs):
    a, _ = two_runs
    finished = client.post(f"/api/runs/{a}/resume")
    assert finished.status_code == 409, finished.text
    assert finished.json()["error_type"] == "not_resumable"
    assert "finished all its steps" in finished.json()["message"]
    assert client.post("/api/runs/nope/resume").status_code == 404
    # the config checker says the same before anything is submitted
    config = {**client.get(f"/api/runs/{a}").json()["config"], "resume_from": a}
    check = client.post("/api/config/check", json=config).json()
    assert check["ok"] is False and check["problems"][0]["field"] == "resume_from"
    assert "finished all its steps" in check["problems"][0]["message"]


def test_missing_tracker_package_is_a_422_naming_the_field(client, tiny_config):
    from trainers.tracking import TRACKERS

    missing = next((name for name, (modules, _) in TRACKERS.items()
                    if not any(importlib.util.find_spec(m) for m in modules)), None)
    if missing is None:
        pytest.skip("every tracker is installed here")
    response = client.post("/api/start_training", json=tiny_config(report_to=missing))
    assert response.status_code == 422, response.text
    problem = response.json()["problems"][0]
    assert problem["field"] == "report_to" and f"pip install {missing}" in problem["message"]
    check = client.post("/api/config/check", json=tiny_config(report_to=missing)).json()
    assert check["ok"] is False and check["problems"][0]["field"] == "report_to"


def losses(client, run_id) -> dict:
    events = client.get(f"/api/runs/{run_id}/events").json()["events"]
    return {e["step"]: e["loss"] for e in events if e["type"] == "progress"}


def test_stop_then_resume_over_http_continues_like_an_uninterrupted_run(client, server,
                                                                        tiny_config, tmp_path,
                                                                        request):
    # steps of ~0.3 s on an idle 2-core machine, ~0.6 s beside the straight run: a stop asked
    # for at step 2 lands seconds before the last one
    config = slow_config(tiny_config, name="to stop", max_steps=STEPS,
                         gradient_accumulation_steps=8)
    straight = start_run(client, config)
    stopped = start_run(client, config)  # side by side with the straight run (two job slots)
    wait_event(client, stopped, "progress", timeout=LOADED_S, step=2)
    if "OMP_NUM_THREADS" not in os.environ:  # the two CPU jobs split the cores
        pid = client.get(f"/api/runs/{stopped}").json()["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"OMP_NUM_THREADS={max(1, os.cpu_count() // 2)}".encode() in environ
    assert client.post(f"/api/runs/{stopped}/stop").status_code == 202
    record = wait_status(client, stopped, timeout=LOADED_S)
    assert record["status"] == "stopped"
    stop_step = record["summary"]["steps"]
    assert 2 <= stop_step < STEPS
    assert wait_status(client, straight, timeout=LOADED_S)["status"] == "succeeded"

    # changing a setting the checkpoint depends on is refused, naming the field
    bad = client.post(f"/api/runs/{stopped}/resume", json={"lora_r": 32})
    assert bad.status_code == 422 and bad.json()["problems"][0]["field"] == "lora_r"
    response = client.post(f"/api/runs/{stopped}/resume")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["resumed_from"] == stopped and body["checkpoint_step"] == stop_step
    # the resumed run (seconds from loading its model) needs the stopped run's checkpoint
    busy = client.delete(f"/api/runs/{stopped}")
    assert busy.status_code == 409 and "resumed by" in busy.json()["message"]
    assert busy.json()["hint"] == f"POST /api/runs/{body['run_id']}/stop first."
    # the CLI resumes the same run meanwhile (a second, independent continuation, checked below)
    env = {**os.environ, "MODELFORGE_HOME": str(server.data_dir)}
    out, err = tmp_path / "cli.out", tmp_path / "cli.err"  # files: a pipe left unread can fill
    with out.open("w") as stdout, err.open("w") as stderr:
        cli = subprocess.Popen([MODELFORGE, "train", "--resume", stopped, "--set",
                                "name=from cli"], stdout=stdout, stderr=stderr, env=env)
    request.addfinalizer(lambda: cli.poll() is None and cli.kill())
    resumed = wait_status(client, body["run_id"], timeout=LOADED_S)
    assert resumed["status"] == "succeeded", resumed["summary"]
    assert resumed["config"]["resume_from"] == stopped and resumed["run_dir"] != record["run_dir"]
    assert resumed["summary"]["resumed_at_step"] == stop_step
    got, want = losses(client, body["run_id"]), losses(client, straight)
    assert sorted(got) == list(range(stop_step + 1, STEPS + 1))
    for step, loss in got.items():
        assert loss == pytest.approx(want[step], rel=1e-5), (step, got, want)

    # the CLI's continuation
    assert cli.wait(timeout=600) == 0, err.read_text()[-3000:]
    assert f"continuing run {stopped} from its checkpoint at step {stop_step}" in out.read_text()
    runs = client.get("/api/runs").json()["runs"]
    from_cli = next(r for r in runs if r["name"] == "from cli")
    assert from_cli["status"] == "succeeded" and from_cli["config"]["resume_from"] == stopped
    compared = client.get("/api/compare", params={"ids": f"{straight},{body['run_id']}"}).json()
    assert {row["field"] for row in compared["differing"]} == {"resume_from"}


def test_cli_resume_says_why_it_cannot(tmp_path):
    env = {**os.environ, "MODELFORGE_HOME": str(tmp_path)}
    out = subprocess.run([MODELFORGE, "train", "--resume", "20990101-000000-abcdef"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "no run with id '20990101-000000-abcdef'" in out.stderr
    both = subprocess.run([MODELFORGE, "train", "config.json", "--resume", "x"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert both.returncode == 2 and "not both" in both.stderr
