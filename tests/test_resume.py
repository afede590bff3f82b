"""Resume: a run stopped at a step continues from its checkpoint as a new run, with the same
step count, learning-rate schedule and next batch as a run that was never interrupted. Real
worker processes on the demo model, both providers (Unsloth on its CPU backend) and DPO."""

from __future__ import annotations

from pathlib import Path

import pytest
from worker_runs import needs_unsloth

from trainers.config import build_config
from trainers.errors import ConfigError
from trainers.events import read_events
from trainers.runs import resume
from trainers.runs.process import cpu_share_env, launch
from trainers.runs.registry import RunInUse, RunRegistry
from trainers.train.telemetry import STOP_AT_FILE
from trainers.tools.demo import SAMPLE_PREFERENCES

pytestmark = pytest.mark.slow
STOP_AT = 3
STEPS = 8


def start(registry: RunRegistry, config: dict, stop_at: int | None = None) -> tuple:
    record = registry.create(build_config(config), source="test")
    run_dir = Path(record["run_dir"])
    if stop_at:  # the trainer stops (gracefully, as on a stop request) at exactly this step
        (run_dir / STOP_AT_FILE).write_text(str(stop_at))
    return record, launch(run_dir, cpu_share_env(2))  # two or three run side by side


def finish(registry: RunRegistry, started: tuple) -> tuple[dict, list]:
    record, proc = started
    proc.wait(timeout=900)
    return registry.finish_from_events(record["id"], proc.returncode), \
        read_events(record["run_dir"])


def run(registry: RunRegistry, config: dict, stop_at: int | None = None) -> tuple[dict, list]:
    return finish(registry, start(registry, config, stop_at))


def by_step(events: list, kind: str = "progress", key: str = "loss") -> dict:
    return {e["step"]: e[key] for e in events if e["type"] == kind and key in e}


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def check_resume_matches(home: Path, config: dict, straight_run: tuple | None = None):
    """`straight_run`: (record, events) of a finished run of `config`, else one is trained."""
    registry = RunRegistry(home)
    # the workers side by side: the straight run trains while the stopped one stops and the
    # resumed one loads (each starts while another waits)
    straight_started = start(registry, config) if straight_run is None else None
    stopped, stopped_events = run(registry, config, stop_at=STOP_AT)
    assert stopped["status"] == "stopped", stopped["summary"]
    saved = [(e["kind"], e["step"]) for e in stopped_events if e["type"] == "saved"]
    assert ("checkpoint", STOP_AT) in saved  # a graceful stop keeps a checkpoint
    assert resume.last_checkpoint(stopped["run_dir"])[1] == STOP_AT
    before = snapshot(Path(stopped["run_dir"]))
    resumed_started = start(registry, resume.resume_config(stopped))
    if straight_started is not None:
        straight_run = finish(registry, straight_started)
    straight, straight_events = straight_run
    assert straight["status"] == "succeeded", straight["summary"]
    # one config, one seed: the two runs agree to the bit up to the stop (adapter init seeded)
    assert by_step(stopped_events) == {s: v for s, v in by_step(straight_events).items()
                                       if s <= STOP_AT}

    resumed, events = finish(registry, resumed_started)
    assert resumed["status"] == "succeeded", resumed["summary"]
    assert resumed["run_dir"] != stopped["run_dir"]
    assert snapshot(Path(stopped["run_dir"])) == before  # nothing written into the old run
    assert resumed["config"]["resume_from"] == stopped["id"]
    stage = next(e for e in events if e["type"] == "stage" and e["name"] == "resume")
    assert stage["from_run"] == stopped["id"] and stage["step"] == STOP_AT

    # the same step count, schedule and next batch: every later step equals the straight run's
    losses, rates = by_step(events), by_step(events, key="learning_rate")
    assert sorted(losses) == list(range(STOP_AT + 1, STEPS + 1))
    assert [e["total_steps"] for e in events if e["type"] == "progress"] == \
        [STEPS] * (STEPS - STOP_AT)
    want_losses, want_rates = by_step(straight_events), by_step(straight_events, "progress",
                                                                "learning_rate")
    for step in losses:
        assert losses[step] == pytest.approx(want_losses[step], rel=1e-5), (step, losses,
                                                                            want_losses)
        assert rates[step] == pytest.approx(want_rates[step], rel=1e-9)
    # a different batch would give a visibly different loss: the steps are not all alike
    assert max(want_losses.values()) - min(want_losses.values()) > 1e-3
    finished = events[-1]
    assert finished["steps"] == STEPS and finished["resumed_from"] == stopped["id"]
    assert finished["resumed_at_step"] == STOP_AT
    return straight_events, events


@pytest.fixture
def sft_config(shared_run_config):
    # the session's shared run (tests/conftest.py) is this config's uninterrupted run (its
    # trackers write files beside the training; they change no number of it)
    assert (shared_run_config["max_steps"], shared_run_config["eval_steps"]) == (STEPS, 3)
    return {**shared_run_config, "report_to": "none"}


def test_huggingface_resume_continues_like_an_uninterrupted_run(tmp_path, sft_config,
                                                                shared_run):
    _, record, events = shared_run
    straight, resumed = check_resume_matches(tmp_path, sft_config, (record, events))
    # evaluations after the resume point agree too, and the best one is recorded
    want = by_step(straight, "eval", "eval_loss")
    got = by_step(resumed, "eval", "eval_loss")
    assert sorted(got) == [6, 8] and all(got[s] == pytest.approx(want[s], rel=1e-5) for s in got)
    # the trainer state carries the evaluations before the stop: the best is over all of them
    best_step = min(want, key=want.get)
    assert resumed[-1]["best_eval_loss"] == pytest.approx(want[best_step], rel=1e-5)
    assert resumed[-1]["best_eval_step"] == best_step


@needs_unsloth
@pytest.mark.unsloth
def test_unsloth_resume_continues_like_an_uninterrupted_run(tmp_path, sft_config):
    check_resume_matches(tmp_path, {**sft_config, "provider": "unsloth"})


def test_dpo_resume_continues_like_an_uninterrupted_run(tmp_path, tiny_config):
    config = tiny_config(strategy="dpo", dataset=str(SAMPLE_PREFERENCES), max_prompt_length=64,
                         max_steps=STEPS, per_device_train_batch_size=2)
    check_resume_matches(tmp_path, config)


def test_resume_refuses_what_it_cannot_continue(tmp_path, tiny_config):
    registry = RunRegistry(tmp_path)
    done, _ = run(registry, tiny_config(max_steps=2))
    with pytest.raises(resume.NotResumable, match="finished all its steps"):
        resume.check_resumable(done)
    failed = registry.set_status(done["id"], "failed", {"message": "pretend"})
    with pytest.raises(resume.NotResumable, match="no checkpoint") as err:
        resume.check_resumable(failed)
    assert "save_steps" in err.value.hint
    # the registry refuses a config that resumes it, before any folder is made
    folders = set((tmp_path / "runs").iterdir())
    with pytest.raises(resume.NotResumable):
        registry.create(build_config(resume.resume_config(failed)))
    with pytest.raises(ConfigError) as bad:
        registry.create(build_config(tiny_config(resume_from="20990101-000000-abcdef")))
    assert bad.value.problems[0]["field"] == "resume_from"
    assert set((tmp_path / "runs").iterdir()) == folders
    with pytest.raises(ConfigError) as bad:
        build_config(tiny_config(resume_from="../../etc"))
    assert "not a run id" in bad.value.problems[0]["message"]


def test_a_resumed_config_must_match_the_checkpoints_run():
    old = {"lora_r": 8, "learning_rate": 0.002, "max_steps": 8, "name": "a"}
    new = {"lora_r": 16, "learning_rate": 0.002, "max_steps": 20, "name": "b",
           "resume_from": "x"}
    problems = resume.mismatched_fields(new, old)
    assert [p["field"] for p in problems] == ["lora_r"]
    assert "trained with 8" in problems[0]["message"]


def test_a_killed_run_resumes_from_its_last_save_steps_checkpoint(tmp_path, tiny_config):
    """No graceful stop: the worker is SIGKILLed after its save_steps checkpoint at step 3."""
    import os
    import signal
    import time

    # steps of ~0.25 s alone (~0.5 s side by side): the kill lands within the 5 steps after the
    # step-3 checkpoint with seconds to spare (polled every 0.05 s)
    config = tiny_config(max_steps=STEPS, save_steps=3, per_device_train_batch_size=16,
                         gradient_accumulation_steps=8)
    registry = RunRegistry(tmp_path)
    straight_started = start(registry, config)  # side by side with the run killed below
    record, proc = start(registry, config)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if any(e["type"] == "saved" and e["kind"] == "checkpoint" and e["step"] == 3
               for e in read_events(record["run_dir"])):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    killed = registry.finish_from_events(record["id"], proc.returncode)
    assert killed["status"] == "failed" and killed["summary"]["error_type"] == "killed"
    checkpoint, step = resume.last_checkpoint(killed["run_dir"])
    assert step in (3, 6)  # 6 only if the machine was too slow to kill it in between

    # a queued resume needs the killed run's checkpoint: the killed run cannot be deleted
    waiting = registry.create(build_config(resume.resume_config(killed)), source="test")
    with pytest.raises(RunInUse, match=f"resumed by queued run {waiting['id']}") as refused:
        registry.delete(killed["id"])
    assert refused.value.blocking == waiting["id"] and Path(checkpoint).is_dir()
    registry.set_status(waiting["id"], "stopped", {"message": "Stopped before it started."})

    resumed_started = start(registry, resume.resume_config(killed))  # the straight run may
    straight, straight_events = finish(registry, straight_started)   # still be training
    assert straight["status"] == "succeeded"
    resumed, events = finish(registry, resumed_started)
    assert resumed["status"] == "succeeded", resumed["summary"]
    got, want = by_step(events), by_step(straight_events)
    assert sorted(got) == list(range(step + 1, STEPS + 1))
    for s in got:
        assert got[s] == pytest.approx(want[s], rel=1e-5), (s, got, want)
