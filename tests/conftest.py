"""Shared fixtures: the tiny random-init demo model (built once per session), the pre-trained
demo (shipped), data paths, a config maker, and one finished training run shared by the slow
tier's tests that read a run (trained once per session, at the first test that asks)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trainers.tools.demo import SAMPLE_PREFERENCES, SAMPLE_SFT, SAMPLE_SUMMARIES  # noqa: E402

PUBLIC_DATA = Path(__file__).resolve().parent / "data"  # 20 rows of each public set


@pytest.fixture(scope="session", autouse=True)
def demo_cache(tmp_path_factory) -> Path:
    """The demo model's cache for this session (MODELFORGE_CACHE, inherited by the CLI and server
    subprocesses): never the user's own cache."""
    path = tmp_path_factory.mktemp("modelforge-cache")
    os.environ["MODELFORGE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    """A random-init Llama with a tokenizer trained on the bundled data (about 5 s to build)."""
    from trainers.tools.demo import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo-model"))


@pytest.fixture(scope="session")
def pretrained_demo(demo_cache) -> Path:
    """The pre-trained demo that `modelforge demo-model` and `run --demo` copy: the weights
    shipped in the package (read only; a test that changes them works on a copy)."""
    from trainers.tools.demo import pretrained_demo_model

    return pretrained_demo_model()


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory, request):
    """A real `modelforge run` (API only) for the test module asking, with the demo model and the
    bundled data under its allowed roots. A module's SERVER_ENV adds environment settings; modules
    that need other flags define their own."""
    from live_server import LiveServer
    from trainers.tools.demo import SAMPLE_DIR

    name = request.module.__name__.rsplit(".", 1)[-1]
    srv = LiveServer(tmp_path_factory.mktemp(name) / "data", "--allowed-root", str(demo_model),
                     "--allowed-root", str(SAMPLE_DIR),
                     env=getattr(request.module, "SERVER_ENV", None)).start()
    yield srv
    srv.close()


@pytest.fixture
def client(server):
    """An httpx client of the module's `server`."""
    with server.client() as c:
        yield c


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "modelforge-data"


@pytest.fixture
def public_data() -> Path:
    return PUBLIC_DATA


@pytest.fixture(scope="session")
def tiny_config(demo_model):
    """A config dict for a short CPU run on the demo model; keyword arguments override (a new
    dict each call, so module fixtures share the maker too)."""

    def make(**overrides) -> dict:
        cfg = {"provider": "huggingface", "model_name": str(demo_model), "max_seq_length": 128,
               "task": "text-generation", "strategy": "sft", "dataset": str(SAMPLE_SFT),
               "max_steps": 6, "per_device_train_batch_size": 4, "learning_rate": 2e-3,
               "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "logging_steps": 1}
        cfg.update(overrides)
        return cfg

    return make


# The session's shared run: 8 steps with evaluations every 3 (and at the last step), TensorBoard
# and W&B (offline) writing side by side when installed. Tests that read a finished run take it
# instead of training their own; one that needs other settings trains its own.

@pytest.fixture(scope="session")
def shared_run_config(tiny_config) -> dict:
    """The config the shared run was started with (do not change it: copy it)."""
    trackers = [name for name in ("tensorboard", "wandb") if importlib.util.find_spec(name)]
    return tiny_config(max_steps=8, eval_split=0.1, eval_steps=3,
                       report_to=trackers or "none", name="shared sft run")


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory, shared_run_config):
    """(home, record, events) of one real worker run of shared_run_config. Tests read it; one
    that must change it works on a copy (the model card's export only adds its folder). The
    worker runs without a peak FLOP/s figure (a CPU has none) and with W&B offline (no network
    here)."""
    from trainers.config import build_config
    from trainers.events import read_events
    from trainers.flops import PEAK_ENV
    from trainers.runs.process import launch
    from trainers.runs.registry import RunRegistry

    home = tmp_path_factory.mktemp("shared-run")
    registry = RunRegistry(home)
    record = registry.create(build_config(shared_run_config), source="test")
    with pytest.MonkeyPatch.context() as env:
        env.delenv(PEAK_ENV, raising=False)
        env.setenv("WANDB_MODE", "offline")
        proc = launch(Path(record["run_dir"]))
    proc.wait(timeout=900)
    record = registry.finish_from_events(record["id"], proc.returncode)
    assert record["status"] == "succeeded", record["summary"]
    return home, record, read_events(record["run_dir"])


# A tiny matched benchmark of both providers (1 warm-up + 2 measured steps of short rows), two
# repeats, with the plain script after the first round (check_plain): 6 measured processes.
# A second plain round (plain_repeats 2) would add two more processes and prove only what
# test_check_plain.py proves without them: the spec's run order and the report's handling of
# two plain runs, on this benchmark's real plain runs.
TINY_BENCHMARK = {"max_seq_length": 96, "batch_size": 2, "steps": 2, "warmup_steps": 1,
                  "repeats": 2, "lora_r": 4, "lora_alpha": 8, "modes": ["lora16"],
                  "check_plain": True, "plain_repeats": 1}


@pytest.fixture(scope="session")
def benchmark_run(tmp_path_factory, demo_model) -> tuple[Path, int]:
    """(run_dir, exit code) of one real benchmark runner of TINY_BENCHMARK, shared by the
    benchmark tests that read a finished two-provider benchmark (test_benchmark.py,
    test_check_plain.py). The torch profiler runs on each variant's warm-up step, as the GPU
    plans use it."""
    import subprocess
    import sys

    run_dir = tmp_path_factory.mktemp("bench") / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(
        json.dumps({"model": str(demo_model), **TINY_BENCHMARK}))
    done = subprocess.run([sys.executable, "-m", "trainers.benchmark.runner", str(run_dir)],
                          capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "MODELFORGE_PROFILE_STEPS": "1"})
    (run_dir / "runner.log").write_text(done.stdout + done.stderr)
    return run_dir, done.returncode


__all__ = ["SAMPLE_SFT", "SAMPLE_PREFERENCES", "SAMPLE_SUMMARIES", "PUBLIC_DATA"]
