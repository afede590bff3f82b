"""Loading a recorded run's model again (playground, export) obeys the server's current rules."""

from __future__ import annotations

import gradio as gr
import pytest

from modelforge_ui.settings import Settings
from modelforge_ui.tabs.context import Dashboard


def run_with(**config) -> dict:
    return {"id": "r1", "config": {"model_name": "meta-llama/Llama-3.2-3B", **config}}


def test_trust_remote_code_needs_the_server_setting(tmp_path):
    strict = Dashboard(None, Settings(data_dir=tmp_path))
    with pytest.raises(gr.Error, match="trust_remote_code"):
        strict.require_model_policy(run_with(trust_remote_code=True))
    strict.require_model_policy(run_with(trust_remote_code=False))  # allowed
    lenient = Dashboard(None, Settings(data_dir=tmp_path, allow_trust_remote_code=True))
    lenient.require_model_policy(run_with(trust_remote_code=True))


def test_local_model_outside_the_allowed_roots_is_refused(tmp_path):
    outside = tmp_path / "elsewhere" / "model"
    outside.mkdir(parents=True)
    app = Dashboard(None, Settings(data_dir=tmp_path / "data"))
    with pytest.raises(gr.Error, match="model_name"):
        app.require_model_policy(run_with(model_name=str(outside)))


def test_playground_keeps_off_the_gpu_while_a_job_trains(tmp_path, tiny_config):
    """With a run holding "GPU 0", the playground and export subprocesses get no GPU."""
    import time

    from modelforge_ui.tabs.playground import gpu_or_cpu
    from trainers.config import build_config
    from trainers.runs.manager import RunManager

    manager = RunManager(tmp_path / "data", devices=["0"], poll_s=0.1)
    app = Dashboard(manager, Settings(data_dir=tmp_path / "data"))
    try:
        assert gpu_or_cpu(app) == ({}, "")
        run = manager.submit(build_config(tiny_config(max_steps=5000)))
        deadline = time.time() + 60
        while not manager.active() and time.time() < deadline:
            time.sleep(0.1)
        env, where = gpu_or_cpu(app)
        assert env == {"CUDA_VISIBLE_DEVICES": ""} and "training job holds the GPU" in where
        manager.stop(run["id"])
        assert manager.wait_idle(300)
    finally:
        manager.shutdown()
