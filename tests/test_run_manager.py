"""The run manager and registry: FIFO order, device slots, stop (queued, graceful, forced),
recovery of an earlier server's runs, concurrent records, incremental event reading."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from live_server import LiveServer, slow_config, start_run, wait_event, wait_status
from test_faults import mount_tmpfs, unmount
from trainers.config import build_config
from trainers.errors import ConfigError
from trainers.tools.demo import SAMPLE_DIR
from trainers.runs.registry import RunRegistry
from trainers.runs.manager import RunManager


def broken_config(folder: Path, **overrides):
    """A valid config whose data fails in the worker at once (cheap, but really executed)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "broken.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n')
    return build_config({"model_name": "some/model", "dataset": str(data), **overrides})


def wait_until(predicate, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- the registry --------------------------------------------------------------------------------

def test_concurrent_creates_get_distinct_ordered_numbers(tmp_path):
    cfg = broken_config(tmp_path)
    barrier = threading.Barrier(50)
    registries = [RunRegistry(tmp_path / "data") for _ in range(50)]  # separate connections
    created = []

    def create(registry):
        barrier.wait()
        created.append(registry.create(cfg, source="api"))

    threads = [threading.Thread(target=create, args=(r,)) for r in registries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = RunRegistry(tmp_path / "data").list()
    assert len(runs) == 50 and len({r["id"] for r in runs}) == 50
    assert sorted(r["seq"] for r in runs) == list(range(1, 51))
    assert all(Path(r["run_dir"], "config.json").is_file() for r in runs)


def test_rename_and_delete(tmp_path):
    registry = RunRegistry(tmp_path)
    run = registry.create(broken_config(tmp_path), source="api")
    assert registry.rename(run["id"], "  nice name ")["name"] == "nice name"
    with pytest.raises(ValueError, match="stop it before deleting"):
        registry.delete(run["id"])  # queued
    registry.set_status(run["id"], "failed", {"message": "x"})
    registry.delete(run["id"])
    assert not Path(run["run_dir"]).exists()
    with pytest.raises(KeyError):
        registry.get(run["id"])


# --- the run database: damaged or read-only at start ---------------------------------------------

def refused_start(data_dir: Path) -> str:
    """Start `modelforge run` on data_dir; it must refuse (exit 2) and say why on stderr."""
    from live_server import PROJECT_ROOT, free_port

    proc = subprocess.Popen([sys.executable, "-m", "modelforge_ui.cli", "run", "--no-dashboard",
                             "--port", str(free_port()), "--data-dir", str(data_dir)],
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the server started on a database it cannot use")
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert err.startswith("error: ") and "Traceback" not in err, err[-2000:]
    return err


def test_a_damaged_run_database_is_reported_and_left_untouched(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    db = data / "modelforge.db"
    garbage = bytes(range(256)) * 64
    db.write_bytes(garbage)
    err = refused_start(data)
    assert f"The run database {db} is damaged" in err
    assert f"mv {db} {db}.damaged" in err and "run folders" in err
    assert db.read_bytes() == garbage


def test_a_read_only_run_database_is_reported_and_left_untouched(tmp_path):
    data = tmp_path / "data"
    registry = RunRegistry(data)
    registry.create(broken_config(tmp_path), source="api")
    db = registry.db_path
    if os.geteuid() == 0:  # root writes through chmod 0o444: make the file itself read-only
        result = subprocess.run(f"mount --bind {db} {db} && mount -o remount,bind,ro {db}",
                                shell=True, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"root ignores chmod, and a read-only bind mount failed: {result.stderr}")
    else:
        db.chmod(0o444)
    before = db.read_bytes()
    try:
        err = refused_start(data)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(db)], check=True)
    assert f"The run database {db} cannot be written" in err and "writable" in err
    assert db.read_bytes() == before


# --- output_dir: a folder no other run or model owns ---------------------------------------------

def refused(registry, cfg) -> str:
    """The output_dir problem of a refused create; nothing of the run may be left behind."""
    before = (len(registry.list()), sorted(registry.runs_dir.iterdir()))
    with pytest.raises(ConfigError) as info:
        registry.create(cfg, source="api")
    assert (len(registry.list()), sorted(registry.runs_dir.iterdir())) == before
    assert [p["field"] for p in info.value.problems] == ["output_dir"], info.value.problems
    return info.value.problems[0]["message"]


def test_output_dir_must_be_new_or_empty_and_owned_by_no_run_or_model(tmp_path, demo_model):
    registry = RunRegistry(tmp_path / "data")
    make = lambda out: broken_config(tmp_path, output_dir=str(out))  # noqa: E731
    first = registry.create(make(tmp_path / "out" / "a"), source="api")  # new: fine
    for out in (tmp_path / "out" / "a", tmp_path / "out" / "a" / "sub", tmp_path / "out"):
        assert f"run {first['id']}" in refused(registry, make(out)), out  # claimed while queued
    registry.set_status(first["id"], "failed", {"message": "x"})  # wrote nothing: free again
    registry.create(make(tmp_path / "out" / "a"), source="api")

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert "is not empty" in refused(registry, make(tmp_path / "full"))
    assert "is a file" in refused(registry, make(tmp_path / "full" / "notes.txt"))
    (tmp_path / "empty").mkdir()
    registry.create(make(tmp_path / "empty"), source="api")  # an empty folder is fine

    assert "is the model or adapter folder" in refused(registry, make(demo_model))
    assert "is inside the model or adapter" in refused(registry, make(demo_model / "adapter"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert "is inside the model or adapter" in refused(registry, make(adapter / "checkpoint"))
    assert "run directories" in refused(registry, make(Path(first["run_dir"]) / "adapter"))
    assert "run directories" in refused(registry, make(registry.runs_dir / "mine"))
    assert "absolute path" in refused(registry, make("relative/out"))
    assert "File name too long" in refused(registry, make("/" + "x" * 5000))


def test_concurrent_creates_claim_an_output_dir_once(tmp_path):
    cfg = broken_config(tmp_path, output_dir=str(tmp_path / "out"))
    barrier = threading.Barrier(10)
    registries = [RunRegistry(tmp_path / "data") for _ in range(10)]  # as separate processes
    outcomes = []

    def create(registry):
        barrier.wait()
        try:
            outcomes.append(registry.create(cfg, source="api")["id"])
        except ConfigError as exc:
            outcomes.append(exc.problems[0]["field"])

    threads = [threading.Thread(target=create, args=(r,)) for r in registries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count("output_dir") == 9
    assert [p.name for p in registries[0].runs_dir.iterdir()] == \
        [r["id"] for r in registries[0].list()] == [o for o in outcomes if o != "output_dir"]


def test_a_create_that_fails_leaves_no_run_folder_or_record(tmp_path):
    """A real full disk: the run folder is made, its config.json cannot be written."""
    registry = RunRegistry(tmp_path / "data")
    mount_tmpfs(registry.runs_dir, "size=16k")
    try:
        (registry.runs_dir / "filler").write_bytes(b"x" * 16384)
        with pytest.raises(OSError) as info:  # the API answers it with 507
            registry.create(broken_config(tmp_path), source="api")
        assert info.value.errno == errno.ENOSPC
        assert [p.name for p in registry.runs_dir.iterdir()] == ["filler"]
        assert registry.list() == []
    finally:
        unmount(registry.runs_dir)


# --- scheduling ------------------------------------------------------------------------------------

def test_fifo_and_one_job_per_device(tmp_path):
    manager = RunManager(tmp_path / "data", devices=["0", "1"], poll_s=0.1)
    try:
        ids = [manager.submit(broken_config(tmp_path, name=f"job-{i}"))["id"] for i in range(5)]
        assert manager.wait_idle(300)
        runs = [manager.get(i) for i in ids]
    finally:
        manager.shutdown()
    assert all(r["status"] == "failed" and r["summary"]["error_type"] == "data" for r in runs)
    starts = [r["started_at"] for r in runs]
    assert starts == sorted(starts)  # FIFO
    # two devices: the first two start together, and never more than two run at once
    assert runs[1]["started_at"] < runs[0]["finished_at"]
    for r in runs:  # at each start, at most two runs (this one included) are running
        running = [o for o in runs if o["started_at"] <= r["started_at"] < o["finished_at"]]
        assert len(running) <= 2


def test_forced_stop_after_the_grace_time(tmp_path, tiny_config):
    manager = RunManager(tmp_path / "data", stop_grace_s=0.2, poll_s=0.05)
    try:
        # steps of several seconds; the stop comes just after a step ended, so the worker
        # cannot reach the next step end (where it would stop gracefully) within the grace time
        cfg = build_config(slow_config(tiny_config, gradient_accumulation_steps=48))
        run_id = manager.submit(cfg)["id"]
        wait_until(lambda: (manager.get(run_id)["progress"] or {}).get("step"), 300,
                   "the first step")
        manager.stop(run_id)
        wait_until(lambda: manager.get(run_id)["status"] != "running", 60, "the stop")
        run = manager.get(run_id)
    finally:
        manager.shutdown()
    assert run["status"] == "stopped"
    assert "Stopped by force" in run["summary"]["message"]


def test_events_are_read_incrementally_and_half_lines_wait(tmp_path):
    manager = RunManager(tmp_path / "data", devices=[], poll_s=0.1)  # no slots: nothing starts
    try:
        run = manager.submit(broken_config(tmp_path))
        path = Path(run["run_dir"]) / "events.jsonl"
        with path.open("w") as fh:
            fh.write(json.dumps({"type": "started", "time": 1}) + "\n")
            fh.write(json.dumps({"type": "progress", "time": 2, "step": 1}) + "\n")
            fh.write('{"type": "progress", "ti')  # the worker is mid-write
            fh.flush()
            got = manager.get(run["id"])
            assert got["events_count"] == 2 and got["progress"]["step"] == 1
            assert [e["seq"] for e in manager.events(run["id"])] == [0, 1]
            fh.write('me": 3, "step": 2}\n')
            fh.write("not json\n")
            fh.write(json.dumps({"type": "progress", "time": 4, "step": 3}) + "\n")
        got = manager.get(run["id"])
        assert got["progress"]["step"] == 3 and got["events_count"] == 5
        assert [e.get("step") for e in manager.events(run["id"], after=1)] == [1, 2, 3]
        assert [e["seq"] for e in manager.events(run["id"], after=1, limit=2)] == [1, 2]
        assert manager.events(run["id"], after=99) == []
    finally:
        manager.shutdown()


BAD_EVENT_LINES = ['5', '[1, 2]', 'null', '"progress"', '{"type": 5}', '{"type": ["x"]}',
                   '{"type": null}', '{"step": 3}', '{"type": ""}', "[" * 10**5 + "]" * 10**5]


def test_lines_that_are_not_events_are_skipped_by_every_reader(tmp_path):
    """A line that is JSON but not an object with a string `type` is skipped like a damaged
    one, by the run manager's incremental reader and by read_events (the registry, the CLI)."""
    from trainers.events import read_events

    manager = RunManager(tmp_path / "data", devices=[], poll_s=0.1)
    try:
        run = manager.submit(broken_config(tmp_path))
        lines = [json.dumps({"type": "started", "time": 1}), *BAD_EVENT_LINES,
                 json.dumps({"type": "progress", "time": 2, "step": 1, "seq": "mine"}),
                 json.dumps({"type": "failed", "time": 3, "error_type": "data", "message": "m"})]
        Path(run["run_dir"], "events.jsonl").write_text("\n".join(lines) + "\n")
        last = len(lines) - 1
        for events in (manager.events(run["id"]), read_events(run["run_dir"])):
            assert [(e["seq"], e["type"]) for e in events] == \
                [(0, "started"), (last - 1, "progress"), (last, "failed")]
        got = manager.get(run["id"])
        assert got["progress"]["step"] == 1 and got["progress"]["seq"] == last - 1
        record = manager.registry.finish_from_events(run["id"], 1)
        assert record["status"] == "failed" and record["summary"]["error_type"] == "data"
    finally:
        manager.shutdown()


def test_num_processes_must_fit_this_machine(tmp_path):
    """Refused when submitted, naming the field and the fix, not failed later in the queue."""
    cores = len(os.sched_getaffinity(0))
    for devices, asked, words in ((["0", "1"], 3, "this server has (2 GPUs)"),
                                  (["cpu"], cores + 1, f"({cores} CPU cores and no GPU)")):
        manager = RunManager(tmp_path / f"data-{len(devices)}", devices=devices, poll_s=0.1)
        try:
            with pytest.raises(ConfigError) as info:
                manager.submit(broken_config(tmp_path, num_processes=asked))
            assert manager.registry.list() == []
        finally:
            manager.shutdown()
        problem, = info.value.problems
        assert problem["field"] == "num_processes" and words in problem["message"], problem
        assert f"set num_processes to {len(devices) if devices != ['cpu'] else cores} or " \
               "less" in problem["message"], problem


# --- recovery of an earlier server's runs -----------------------------------------------------------

def stand_in_worker(run_dir: str, seconds: float, final_event: dict | None = None):
    """A real process whose command line names the run directory, as a worker's does."""
    code = ("import json, sys, time; time.sleep(float(sys.argv[1]))\n"
            "if sys.argv[3]: open(sys.argv[2] + '/events.jsonl', 'a').write(sys.argv[3] + '\\n')")
    return subprocess.Popen([sys.executable, "-c", code, str(seconds), run_dir,
                             json.dumps(final_event) if final_event else ""],
                            start_new_session=True)


def test_recovery_at_start(tmp_path):
    data = tmp_path / "data"
    registry = RunRegistry(data)
    cfg = broken_config(tmp_path)
    make = lambda source="api": registry.create(cfg, source=source)  # noqa: E731
    alive, dead, done, queued, cli = make(), make(), make(), make(), make("cli")
    # an earlier server left these: one worker still training, one gone, one that finished
    # unrecorded, a queued run, and a run `modelforge train` created but never started
    worker = stand_in_worker(alive["run_dir"], 3, {"type": "finished", "time": 1, "steps": 2})
    registry.mark_running(alive["id"], worker.pid)
    registry.mark_running(dead["id"], 999_999)
    registry.mark_running(done["id"], 999_998)
    Path(done["run_dir"], "events.jsonl").write_text(
        json.dumps({"type": "finished", "time": 1, "steps": 5}) + "\n")

    manager = RunManager(data, poll_s=0.1)
    try:
        assert manager.recovered == {"reattached": [alive["id"]], "requeued": [queued["id"]],
                                     "interrupted": [dead["id"], cli["id"]],
                                     "finished": [done["id"]]}
        assert manager.get(dead["id"])["status"] == "interrupted"
        assert "worker is gone" in manager.get(dead["id"])["summary"]["message"]
        assert manager.get(cli["id"])["status"] == "interrupted"
        assert manager.get(done["id"])["status"] == "succeeded"
        assert manager.get(alive["id"])["status"] == "running"
        # the re-attached worker holds the CPU slot: the re-queued run waits for it
        assert manager.get(queued["id"])["queue_position"] == 1
        assert manager.wait_idle(300)
        worker.wait()
        alive_run, queued_run = manager.get(alive["id"]), manager.get(queued["id"])
    finally:
        manager.shutdown()
    assert alive_run["status"] == "succeeded" and alive_run["summary"]["steps"] == 2
    assert queued_run["status"] == "failed" and queued_run["summary"]["error_type"] == "data"
    assert queued_run["started_at"] >= alive_run["finished_at"]


def test_a_reattached_worker_that_dies_silently_is_failed_not_left_running(tmp_path):
    registry = RunRegistry(tmp_path / "data")
    run = registry.create(broken_config(tmp_path), source="api")
    worker = stand_in_worker(run["run_dir"], 1)
    registry.mark_running(run["id"], worker.pid)
    manager = RunManager(tmp_path / "data", poll_s=0.1)
    try:
        assert manager.wait_idle(60)
        record = manager.get(run["id"])
    finally:
        manager.shutdown()
        worker.wait()
    assert record["status"] == "failed" and record["summary"]["error_type"] == "worker_crashed"
    assert "exit status is unknown" in record["summary"]["message"]


# --- over HTTP: the queue and stopping -------------------------------------------------------------

@pytest.mark.slow
def test_queue_positions_and_stopping_over_http(demo_model, tmp_path, tiny_config):
    srv = LiveServer(tmp_path / "data", "--allowed-root", str(demo_model),
                     "--allowed-root", str(SAMPLE_DIR)).start()
    try:
        broken = srv.data_dir / "datasets" / "broken.jsonl"
        broken.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n')
        with srv.client() as client:
            run_a = start_run(client, slow_config(tiny_config))
            wait_status(client, run_a, ("running",))
            run_b = start_run(client, tiny_config(dataset=str(broken)))
            run_c = start_run(client, tiny_config(dataset=str(broken)))
            positions = [client.get(f"/api/runs/{r}").json()["queue_position"]
                         for r in (run_a, run_b, run_c)]
            assert positions == [None, 1, 2]

            stopped_b = client.post(f"/api/runs/{run_b}/stop")
            assert stopped_b.status_code == 202 and stopped_b.json()["status"] == "stopped"
            assert stopped_b.json()["summary"]["message"] == "Stopped before it started."
            assert client.get(f"/api/runs/{run_c}").json()["queue_position"] == 1

            busy = client.delete(f"/api/runs/{run_a}")
            assert busy.status_code == 409 and "stop it before deleting" in busy.json()["message"]
            wait_event(client, run_a, "progress")
            assert client.post(f"/api/runs/{run_a}/stop").status_code == 202
            a = wait_status(client, run_a)
            assert a["status"] == "stopped" and a["summary"]["stopped_early"] is True
            assert a["summary"]["steps"] < 8
            assert client.get(f"/api/runs/{run_a}/adapter").status_code == 200  # saved on stop
            c = wait_status(client, run_c)
            assert c["started_at"] >= a["finished_at"]
            assert client.get(f"/api/runs/{run_b}").json()["started_at"] is None  # never ran
    finally:
        srv.close()


def test_the_server_token_never_reaches_a_child_process(monkeypatch):
    from trainers.runs.process import child_env

    monkeypatch.setenv("MODELFORGE_TOKEN", "s" * 32)
    monkeypatch.setenv("HF_TOKEN", "hf_for_gated_models")
    env = child_env({"CUDA_VISIBLE_DEVICES": "0"})
    assert "MODELFORGE_TOKEN" not in env
    assert env["HF_TOKEN"] == "hf_for_gated_models" and env["CUDA_VISIBLE_DEVICES"] == "0"


def test_cpu_jobs_at_once_split_the_cores_and_spin_briefly(monkeypatch):
    """Processes that share the cores each spun on the other's time (45 times slower)."""
    import os

    from trainers.runs.process import child_env, cpu_share_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert cpu_share_env(1) == {}
    assert cpu_share_env(2) == {"OMP_NUM_THREADS": str(max(1, os.cpu_count() // 2))}
    assert cpu_share_env(10**6) == {"OMP_NUM_THREADS": "1"}
    assert child_env()["GOMP_SPINCOUNT"] == "10000"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the operator's settings win
    monkeypatch.setenv("GOMP_SPINCOUNT", "0")
    assert cpu_share_env(2) == {} and child_env()["GOMP_SPINCOUNT"] == "0"


@pytest.mark.slow
def test_a_worker_of_a_token_server_does_not_get_the_token(demo_model, tmp_path, tiny_config):
    token = "t" * 32
    srv = LiveServer(tmp_path / "data", "--allowed-root", str(demo_model),
                     "--allowed-root", str(SAMPLE_DIR), token=token).start()
    try:
        with srv.client() as client:
            run_id = start_run(client, slow_config(tiny_config))
            pid = wait_status(client, run_id, ("running",))["pid"]
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"MODELFORGE_TOKEN={token}".encode() in \
            Path(f"/proc/{srv.proc.pid}/environ").read_bytes().split(b"\0")  # the server's
        assert not [v for v in environ if v.startswith(b"MODELFORGE_TOKEN=")]
        assert not [v for v in environ if token.encode() in v]
    finally:
        srv.close()


def test_one_manager_per_data_directory(tmp_path):
    """A second server on the same data directory would recover and start the same runs."""
    from trainers.runs.manager import DataDirInUse

    first = RunManager(tmp_path / "data", devices=[])
    try:
        with pytest.raises(DataDirInUse, match="Another ModelForge server"):
            RunManager(tmp_path / "data", devices=[])
    finally:
        first.shutdown()
    RunManager(tmp_path / "data", devices=[]).shutdown()  # free again once the first is gone
