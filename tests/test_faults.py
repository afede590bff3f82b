"""Faults and load over real HTTP: killed workers, out of memory, disk full, read-only output,
a data set deleted after submit, a server killed mid-run, 50 concurrent submits, bad input.
Each fault is real (a signal, a memory limit, a tiny or read-only filesystem), never simulated
inside the code under test."""

from __future__ import annotations

import errno
import gc
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer, slow_config, start_run, wait_event, wait_status
from trainers.tools.demo import SAMPLE_DIR, SAMPLE_SFT

pytestmark = pytest.mark.slow


def bad_data_file(folder: Path, name: str = "broken.jsonl") -> Path:
    """A data set that passes submit checks (it exists) but fails at once in the worker."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n')
    return path


def assert_healthy(client: httpx.Client) -> None:
    started = time.time()
    assert client.get("/api/health").json()["status"] == "ok"
    assert time.time() - started < 2


# --- a killed worker --------------------------------------------------------------------------

def test_sigkill_mid_run_fails_fast_and_the_queue_moves_on(client, server, tiny_config):
    run_a = start_run(client, slow_config(tiny_config))
    wait_status(client, run_a, ("running",))
    # B is valid when submitted; its data set disappears while it waits in the queue
    data = server.data_dir / "datasets" / "soon-gone.jsonl"
    shutil.copy(SAMPLE_SFT, data)
    run_b = start_run(client, tiny_config(dataset=str(data), max_steps=1))
    assert client.get(f"/api/runs/{run_b}").json()["queue_position"] == 1

    wait_event(client, run_a, "progress")  # training is under way
    data.unlink()
    pid = client.get(f"/api/runs/{run_a}").json()["pid"]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    record = wait_status(client, run_a, timeout=30)
    assert time.time() - killed_at < 5, "the death was not noticed within seconds"
    assert record["status"] == "failed"
    assert record["summary"]["error_type"] == "killed"
    assert "SIGKILL" in record["summary"]["message"]
    assert "out-of-memory" in record["summary"]["hint"]
    assert_healthy(client)

    record_b = wait_status(client, run_b)  # the queue moved on to B, which ran and failed cleanly
    assert record_b["started_at"] >= record["finished_at"]
    assert record_b["status"] == "failed"
    assert record_b["summary"]["error_type"] == "data"
    assert "does not exist" in record_b["summary"]["message"] and record_b["summary"]["hint"]
    assert_healthy(client)


# --- out of memory --------------------------------------------------------------------------------

def test_cpu_out_of_memory_fails_with_the_remedies(demo_model, tmp_path, tiny_config):
    """The server caps each worker's data memory at 4 GiB (RLIMIT_DATA, --worker-memory-gb); a
    batch of 1024 sequences of 128 tokens needs far more, so an allocation fails mid-training."""
    srv = LiveServer(tmp_path / "data", "--allowed-root", str(demo_model),
                     "--worker-memory-gb", "4").start()
    try:
        rng = random.Random(0)
        words = SAMPLE_SFT.read_text().split()
        data = srv.data_dir / "datasets" / "long.jsonl"
        data.write_text("".join(json.dumps({"text": " ".join(rng.choices(words, k=300))}) + "\n"
                                for _ in range(1100)))
        with srv.client() as client:
            run_id = start_run(client, tiny_config(dataset=str(data), max_steps=1,
                                                   per_device_train_batch_size=1024))
            record = wait_status(client, run_id)
            summary = record["summary"]
            assert record["status"] == "failed", summary
            assert summary["error_type"] == "oom", summary
            assert "can't allocate memory" in summary["message"]
            assert summary["remedies"][0] == "reduce max_seq_length (128 -> 64)"
            assert "per_device_train_batch_size (1024 -> 512)" in summary["remedies"][1]
            types = [e["type"] for e in client.get(f"/api/runs/{run_id}/events").json()["events"]]
            assert "started" in types  # the model loaded; training itself ran out of memory
            assert_healthy(client)
    finally:
        srv.close()


# --- the output filesystem --------------------------------------------------------------------------

def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}): needs root")


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True)


def test_disk_full_on_save(client, server, tiny_config):
    full = server.data_dir / "outputs" / "full"
    mount_tmpfs(full, "size=64k")  # the adapter alone is ~150 KiB
    try:
        run_id = start_run(client, tiny_config(max_steps=1, output_dir=str(full / "adapter")))
        record = wait_status(client, run_id)
    finally:
        unmount(full)
    assert record["status"] == "failed"
    assert record["summary"]["error_type"] == "disk_full", record["summary"]
    assert "No space left on device" in record["summary"]["message"]
    assert "Free space" in record["summary"]["hint"]
    assert_healthy(client)


def fill(folder: Path) -> None:
    """Take every free byte of folder's file system, as another process writing there would."""
    with (folder / "filler").open("wb", buffering=0) as fh:  # unbuffered: nothing left to flush
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def test_disk_full_mid_run_is_the_recorded_cause(demo_model, tmp_path, tiny_config):
    """The disk of the run directories fills up while a run trains: its next checkpoint cannot
    be written, and its failed event may not fit either; the run's record must still say the
    disk is full, with the fix (not "crashed, see train.log", which is on the same disk)."""
    runs = tmp_path / "data" / "runs"
    mount_tmpfs(runs, "size=2m")
    srv = LiveServer(tmp_path / "data", "--allowed-root", str(demo_model),
                     "--allowed-root", str(SAMPLE_DIR)).start()
    try:
        with srv.client() as client:
            run_id = start_run(client, slow_config(tiny_config, max_steps=40, save_steps=4))
            wait_event(client, run_id, "progress")
            fill(runs)
            record = wait_status(client, run_id)
    finally:
        srv.close()
        unmount(runs)
    summary = record["summary"]
    assert record["status"] == "failed" and summary["error_type"] == "disk_full", summary
    assert "The disk" in summary["message"] and "is full (ENOSPC" in summary["message"], summary
    assert "Free space" in summary["hint"], summary


def test_a_worker_that_died_on_a_full_disk_without_a_word_is_recorded_as_such(tmp_path):
    from trainers.config import build_config
    from trainers.runs.registry import RunRegistry

    registry = RunRegistry(tmp_path / "data")
    mount_tmpfs(registry.runs_dir, "size=64k")
    try:
        run = registry.create(build_config({"model_name": "m", "dataset": "d.jsonl"}))
        fill(registry.runs_dir)
        record = registry.finish_from_events(run["id"], 1)  # no event: it could not write one
    finally:
        unmount(registry.runs_dir)
    assert record["status"] == "failed" and record["summary"]["error_type"] == "disk_full"
    assert f"The disk that holds {run['run_dir']} is full (ENOSPC" in record["summary"]["message"]
    assert "exited with code 1 and could not record why" in record["summary"]["message"]


def test_a_full_disk_is_named_when_the_error_does_not_say_so(tmp_path):
    """torch.save on a full disk fails with an error that never mentions ENOSPC."""
    import torch

    from trainers.diagnostics import diagnose_exception

    full = tmp_path / "full"
    mount_tmpfs(full, "size=64k")
    try:
        fill(full)
        try:
            torch.save(torch.zeros(100_000), full / "optimizer.pt")
        except Exception as exc:  # noqa: BLE001 - whatever torch raises
            error = type(exc)(*exc.args)  # a copy: the original's frames hold the file open
        else:
            pytest.fail("torch.save fitted on a full disk")
        gc.collect()
        diagnosis = diagnose_exception(error, folders=[tmp_path / "run", full / "adapter"])
    finally:
        unmount(full)
    assert diagnosis["error_type"] == "disk_full", diagnosis
    assert f"The disk that holds {full / 'adapter'} is full (ENOSPC" in diagnosis["message"]
    assert "Free space" in diagnosis["hint"]
    # the same error with room on the disks is not blamed on them
    assert diagnose_exception(error, folders=[tmp_path])["error_type"] == "internal"


def test_read_only_output_dir(client, server, tiny_config):
    read_only = server.data_dir / "outputs" / "read-only"
    if os.geteuid() == 0:
        mount_tmpfs(read_only, "size=1m,ro")  # root writes through chmod, not through ro
    else:
        read_only.mkdir(parents=True)
        read_only.chmod(0o555)
    try:
        run_id = start_run(client, tiny_config(max_steps=1, output_dir=str(read_only)))
        record = wait_status(client, run_id)
    finally:
        if os.geteuid() == 0:
            unmount(read_only)
    assert record["status"] == "failed"
    assert record["summary"]["error_type"] == "output_not_writable", record["summary"]
    assert "writable" in record["summary"]["hint"]
    assert_healthy(client)


# --- the server dies ----------------------------------------------------------------------------

def test_server_killed_mid_run_reattaches_the_live_worker(demo_model, tmp_path, tiny_config):
    data_dir = tmp_path / "data"
    args = ("--allowed-root", str(demo_model), "--allowed-root", str(SAMPLE_DIR))
    first = LiveServer(data_dir, *args).start()
    broken = bad_data_file(data_dir / "datasets")
    try:
        with first.client() as client:
            earlier = start_run(client, tiny_config(dataset=str(broken)))
            earlier_record = wait_status(client, earlier)
            run_a = start_run(client, slow_config(tiny_config))
            wait_status(client, run_a, ("running",))
            run_b = start_run(client, tiny_config(dataset=str(broken)))
            wait_event(client, run_a, "progress")
            pid = client.get(f"/api/runs/{run_a}").json()["pid"]
        first.kill()
        os.kill(pid, 0)  # the worker outlived the server

        second = LiveServer(data_dir, *args).start()
        with second.client() as client:
            assert client.get(f"/api/runs/{earlier}").json() == \
                {**earlier_record, "queue_position": None}  # history intact
            a = client.get(f"/api/runs/{run_a}").json()
            assert a["status"] == "running" and a["pid"] == pid
            assert client.get(f"/api/runs/{run_b}").json()["queue_position"] == 1
            assert f"reattached at start: {run_a}" in second.log()
            assert f"requeued at start: {run_b}" in second.log()
            # the re-attached run is still controlled: stop it gracefully
            assert client.post(f"/api/runs/{run_a}/stop").status_code == 202
            a = wait_status(client, run_a)
            assert a["status"] == "stopped" and a["summary"]["stopped_early"] is True
            assert client.get(f"/api/runs/{run_a}/adapter").status_code == 200
            b = wait_status(client, run_b)  # B waited for A, then ran
            assert b["status"] == "failed" and b["started_at"] >= a["finished_at"]
        second.close()
    finally:
        first.close()


def test_server_and_worker_killed_marks_the_run_interrupted(demo_model, tmp_path, tiny_config):
    data_dir = tmp_path / "data"
    args = ("--allowed-root", str(demo_model), "--allowed-root", str(SAMPLE_DIR))
    first = LiveServer(data_dir, *args).start()
    try:
        with first.client() as client:
            run_a = start_run(client, slow_config(tiny_config))
            wait_event(client, run_a, "progress")
            record = client.get(f"/api/runs/{run_a}").json()
        first.kill()  # the machine "loses power": server first, then the worker
        os.killpg(record["pid"], signal.SIGKILL)

        second = LiveServer(data_dir, *args).start()
        with second.client() as client:
            a = client.get(f"/api/runs/{run_a}").json()
            assert a["status"] == "interrupted"
            assert "worker is gone" in a["summary"]["message"] and a["summary"]["hint"]
            run_dir = Path(a["run_dir"])
            for name in ("config.json", "events.jsonl", "train.log"):
                assert (run_dir / name).is_file(), name
            events = client.get(f"/api/runs/{run_a}/events").json()["events"]
            assert events[0]["type"] == "started" and events[-1]["type"] == "progress"
            assert a["config"] == record["config"]
        second.close()
    finally:
        first.close()


# --- load -----------------------------------------------------------------------------------------

def test_50_concurrent_submits_all_recorded_and_run_one_at_a_time(demo_model, tmp_path,
                                                                   tiny_config):
    """Valid configs whose data fails at once in the worker: every run really executes (its
    worker writes the failure), cheaply."""
    srv = LiveServer(tmp_path / "data", "--allowed-root", str(demo_model)).start()
    try:
        broken = bad_data_file(srv.data_dir / "datasets")
        barrier = threading.Barrier(50)
        with srv.client() as client:
            def submit(i: int) -> httpx.Response:
                barrier.wait()
                return client.post("/api/start_training",
                                   json=tiny_config(dataset=str(broken), name=f"load-{i}"))

            with ThreadPoolExecutor(50) as pool:
                responses = list(pool.map(submit, range(50)))
            assert [r.status_code for r in responses] == [202] * 50
            ids = [r.json()["run_id"] for r in responses]
            assert len(set(ids)) == 50

            deadline = time.time() + 600
            while time.time() < deadline:
                listing = client.get("/api/runs", params={"limit": 1000}).json()
                if all(r["status"] == "failed" for r in listing["runs"]):
                    break
                time.sleep(1)
            runs = sorted(listing["runs"], key=lambda r: r["seq"])
        assert listing["total"] == 50 and {r["id"] for r in runs} == set(ids)
        assert {r["name"] for r in runs} == {f"load-{i}" for i in range(50)}
        assert [r["seq"] for r in runs] == list(range(1, 51))
        assert all(r["status"] == "failed" and r["summary"]["error_type"] == "data"
                   for r in runs), [r["summary"] for r in runs if r["status"] != "failed"]
        for before, after in zip(runs, runs[1:]):  # FIFO, and never two at once
            assert before["started_at"] < after["started_at"]
            assert before["finished_at"] <= after["started_at"]
    finally:
        srv.close()


# --- a damaged events file ------------------------------------------------------------------------

def test_event_lines_that_are_not_events_do_not_break_the_run_views(client, server, tiny_config):
    run_id = start_run(client, tiny_config(dataset=str(bad_data_file(server.data_dir / "datasets"))))
    record = wait_status(client, run_id)
    with (Path(record["run_dir"]) / "events.jsonl").open("a") as fh:
        fh.write('{"type": 5}\n[1]\n{"type": ["progress"]}\n7\n')
    for path in (f"/api/runs/{run_id}", f"/api/runs/{run_id}/events"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
    events = client.get(f"/api/runs/{run_id}/events").json()["events"]
    assert [e["type"] for e in events] == ["failed"]


# --- bad input ------------------------------------------------------------------------------------

def test_bad_input_gets_a_clear_4xx_never_a_500(client, server, tiny_config):
    good = tiny_config()

    def post(body: bytes | str, path: str = "/api/start_training", **kw) -> httpx.Response:
        return client.post(path, content=body, headers={"Content-Type": "application/json"}, **kw)

    def chunks(total: int):
        for _ in range(total // 65536):
            yield b" " * 65536

    cases = [
        (post('{"model_name": '), 400, "bad_json"),
        (post(b"\xff\xfe\x00{"), 400, "bad_json"),
        (post('{"model_name": "x", "dataset": "d.jsonl", "learning_rate": NaN}'), 400,
         "bad_json"),
        (post("[" * 50_000 + "]" * 50_000), 400, "bad_json"),
        (post(""), 422, "config"),
        (post("[1, 2]"), 422, "config"),
        (post('"a string"'), 422, "config"),
        (post(json.dumps({**good, "name": ["a"]})), 422, "config"),  # a list of lora_r is a sweep
        (post(json.dumps({**good, "num_train_epochs": "many"})), 422, "config"),
        (post(json.dumps({**good, "num_train_epochs": 1e308})), 422, "config"),
        (post(json.dumps(good)[:-1] + ', "num_train_epochs": 1e999}'), 422, "config"),
        (post(json.dumps({**good, "seed": 2**64})), 422, "config"),
        (post(json.dumps({**good, "num_processes": 10**6})), 422, "config"),
        (post(json.dumps({**good, "num_processes": 1000})), 422, "config"),  # > this machine
        (post(json.dumps({**good, "column_mapping": "prompt"})), 422, "config"),
        (post(json.dumps({**good, "target_modules": 5})), 422, "config"),
        (post(json.dumps({**good, "batch_size": 4})), 422, "config"),
        (post(json.dumps(good), params={"preset": "fastest"}), 422, "config"),
        (post(json.dumps({**good, "name": "x" * 3 * 2**20})), 413, "too_large"),
        (client.post("/api/start_training", content=chunks(3 * 2**20)), 413, "too_large"),
        (post(json.dumps({**good, "dataset": "../../../../etc/passwd"})), 403,
         "path_not_allowed"),
        (post(json.dumps({**good, "dataset": "/etc/passwd"})), 403, "path_not_allowed"),
        (client.get("/api/runs/x/events", params={"after": -1}), 422, "invalid_request"),
        (client.get("/api/runs/x/events", params={"after": "abc"}), 422, "invalid_request"),
        (client.get("/api/runs", params={"limit": 0}), 422, "invalid_request"),
        (client.get("/api/runs", params={"status": "bogus"}), 422, "invalid_request"),
        (client.get("/api/runs/" + "x" * 5000), 404, "not_found"),
        (client.get("/api/runs/..%2F..%2Fetc%2Fpasswd"), 404, "not_found"),
        (client.patch("/api/runs/x", json={"name": 5}), 422, "invalid_request"),
        (client.patch("/api/runs/x", content=b"{oops",
                      headers={"Content-Type": "application/json"}), 400, "bad_json"),
        (post(json.dumps({"dataset": 5}), "/api/datasets/preview"), 422, "invalid_request"),
        (post(json.dumps({"dataset": "a.jsonl", "n": 1000}), "/api/datasets/preview"), 422,
         "invalid_request"),
        (post(json.dumps({"dataset": "a.jsonl", "rows": 3}), "/api/datasets/preview"), 422,
         "invalid_request"),
        (post(json.dumps(good), "/api/datasets"), 422, "invalid_request"),
        (client.put("/api/runs"), 405, "method_not_allowed"),
        (client.get("/api/nothing"), 404, "not_found"),
    ]
    for i, (response, status, error_type) in enumerate(cases):
        assert response.status_code == status, (i, response.status_code, response.text[:300])
        body = response.json()
        assert body["error_type"] == error_type, (i, body)
        assert body["message"] and "Traceback" not in body["message"], (i, body)
    assert "Exception in ASGI application" not in server.log()
    assert_healthy(client)
