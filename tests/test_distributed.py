"""Several processes through torchrun: two CPU ranks with the gloo backend, as on two GPUs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from trainers.config import build_config
from trainers.errors import ConfigError
from trainers.events import read_events
from trainers.runs.registry import RunRegistry
from trainers.runs.manager import RunManager
from trainers.runs.process import launch, worker_command
from trainers.runs.stop_flag import request_stop

pytestmark = pytest.mark.slow


def start(data_dir, config: dict):
    registry = RunRegistry(data_dir)
    run = registry.create(build_config(config), source="test")
    return registry, run, launch(Path(run["run_dir"]))


def wait_for_progress(run_dir, timeout=300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(e["type"] == "progress" for e in read_events(run_dir)):
            return
        time.sleep(0.3)
    raise AssertionError("no progress event")


def rank_pids(run_dir) -> dict[int, int]:
    """RANK -> pid of the worker processes of this run (read from /proc)."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(run_dir) in " ".join(proc.info["cmdline"] or []) and \
                    "trainers.train.worker" in proc.info["cmdline"]:
                rank = proc.environ().get("RANK")
                if rank is not None:
                    found[int(rank)] = proc.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_command_uses_torchrun_above_one_process(tmp_path, tiny_config):
    registry = RunRegistry(tmp_path)
    one = registry.create(build_config(tiny_config()))
    two = registry.create(build_config(tiny_config(num_processes=2)))
    assert worker_command(Path(one["run_dir"]))[1:3] == ["-m", "trainers.train.worker"]
    command = worker_command(Path(two["run_dir"]))
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in command and command[-3:-1] == ["-m", "trainers.train.worker"]


@pytest.fixture(scope="module")
def queued_pair(tmp_path_factory, tiny_config):
    """A two-"GPU" manager (CPU here: CUDA_VISIBLE_DEVICES only names the slots) given a
    two-process run, then a one-process run: (manager, the two runs' records once idle)."""
    manager = RunManager(tmp_path_factory.mktemp("two-slots"), devices=["0", "1"])
    try:
        both = manager.submit(build_config(tiny_config(num_processes=2, max_steps=6)))
        one = manager.submit(build_config(tiny_config(max_steps=2)))
        assert manager.wait_idle(timeout=900)
        yield manager, manager.get(both["id"]), manager.get(one["id"])
    finally:
        manager.shutdown()


def test_two_ranks_train_and_save_one_adapter(queued_pair):
    _, record, _ = queued_pair
    assert record["status"] == "succeeded", record["summary"]
    events = read_events(record["run_dir"])
    assert [e["type"] for e in events].count("started") == 1  # rank 0 alone writes events
    assert events[0]["world_size"] == 2 and events[0]["distributed_strategy"] == "ddp"
    finished = events[-1]
    assert finished["world_size"] == 2 and len(finished["peak_gpu_mem_allocated_gib_per_rank"]) == 2
    # tokens of the whole job: every rank's batches are counted
    assert finished["tokens_seen"] > 0
    adapters = list(Path(record["run_dir"]).rglob("adapter_model.safetensors"))
    assert [p.parent.name for p in adapters] == ["adapter"]


def test_stop_reaches_every_rank(tmp_path, tiny_config):
    registry, run, proc = start(tmp_path, tiny_config(num_processes=2, max_steps=5000))
    wait_for_progress(run["run_dir"])
    request_stop(run["run_dir"])
    proc.wait(timeout=300)  # both ranks stopped at the same step, or this would hang
    record = registry.finish_from_events(run["id"], proc.returncode)
    assert record["status"] == "stopped", record["summary"]
    assert record["summary"]["steps"] < 5000
    assert (Path(run["run_dir"]) / "adapter" / "adapter_model.safetensors").exists()


def test_a_killed_rank_fails_the_run_with_its_reason(tmp_path, tiny_config):
    registry, run, proc = start(tmp_path, tiny_config(num_processes=2, max_steps=5000))
    wait_for_progress(run["run_dir"])
    pids = rank_pids(run["run_dir"])
    assert set(pids) == {0, 1}
    os.kill(pids[1], signal.SIGKILL)
    proc.wait(timeout=120)
    record = registry.finish_from_events(run["id"], proc.returncode)
    assert record["status"] == "failed"
    summary = record["summary"]
    assert summary["failed_rank"] == 1 and summary["error_type"] == "killed"
    assert "rank 1 killed by signal SIGKILL" in summary["message"]


def test_a_failing_rank_reports_its_own_diagnosis(tmp_path):
    """When torchrun names rank 1 as the root cause and rank 1 left its diagnosis, that
    diagnosis is the run's reason (rank 0's "connection closed" is only its echo)."""
    from trainers.runs.registry import _rank_failure_summary
    from trainers.train.worker import _record_rank_failure

    (tmp_path / "train.log").write_text(
        "RuntimeError: Connection closed by peer\n"
        "Root Cause (first observed failure):\n[0]:\n  time      : 2026-11-29\n"
        "  host      : localhost\n  rank      : 1 (local_rank: 1)\n"
        "  exitcode  : 1 (pid: 42)\n")
    _record_rank_failure(tmp_path, 1, {"error_type": "data", "message": "d.jsonl: line 3: "
                                       "missing field 'completion'.", "hint": "fix it"})
    summary = _rank_failure_summary(str(tmp_path))
    assert summary["failed_rank"] == 1 and summary["error_type"] == "data"
    assert summary["message"] == "rank 1 failed: d.jsonl: line 3: missing field 'completion'."
    (tmp_path / "train.log").write_text("Root Cause (first observed failure):\n[0]:\n"
                                        "  rank      : 0 (local_rank: 0)\n  exitcode  : 1\n")
    assert _rank_failure_summary(str(tmp_path)) is None  # rank 0's own failed event stands


def test_queue_gives_a_run_as_many_gpus_as_it_asks_for(queued_pair, tiny_config):
    """The two-process run holds both slots, so the next run waits; a run asking for three is
    refused at submit (it could never start)."""
    manager, first, second = queued_pair
    with pytest.raises(ConfigError, match="num_processes: 3 is more than this server has"):
        manager.submit(build_config(tiny_config(num_processes=3)))
    assert first["status"] == "succeeded" and second["status"] == "succeeded"
    assert second["started_at"] >= first["finished_at"]


def test_fsdp_rules():
    from trainers.config import check_config

    base = {"model_name": "m", "dataset": "d", "num_processes": 2, "distributed_strategy": "fsdp"}
    assert check_config(base) == []
    assert "fsdp cannot shard a 4-bit" in check_config({**base, "use_4bit": True})[0]["message"]
    assert "use ddp" in check_config({**base, "provider": "unsloth"})[0]["message"]


def test_fsdp_without_gpus_fails_with_the_reason(tmp_path, tiny_config):
    registry, run, proc = start(tmp_path, tiny_config(num_processes=2, max_steps=2,
                                                      distributed_strategy="fsdp"))
    proc.wait(timeout=600)
    record = registry.finish_from_events(run["id"], proc.returncode)
    assert record["status"] == "failed"
    assert record["summary"]["error_type"] == "environment"
    assert "fsdp" in record["summary"]["message"] and "CUDA GPU" in record["summary"]["message"]
