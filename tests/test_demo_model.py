"""The demo model's pre-training is seeded and cached: `modelforge demo-model` and `run --demo`
copy the cached model instead of pre-training again. (The loss drop it gives a LoRA run is
test_train_e2e.py::test_readme_demo_as_written.)"""

from __future__ import annotations

import os
import subprocess
import sys

from trainers.tools.demo import build_demo_model


def test_pretraining_is_seeded(tmp_path):
    """Two builds with the same steps write the same weights, unlike the random-init model."""
    built = [build_demo_model(tmp_path / name, pretrain_steps=pretrain_steps)
             for name, pretrain_steps in (("a", 3), ("b", 3), ("random", 0))]
    a, b, random_init = [(path / "model.safetensors").read_bytes() for path in built]
    assert a == b and a != random_init
    assert "pre-trained for 3 steps" in (built[0] / "MODELFORGE_DEMO.txt").read_text()


def test_demo_model_and_demo_server_reuse_the_cache(tmp_path, pretrained_demo):
    """With the cache filled, `modelforge demo-model DIR` copies it in seconds without
    pre-training, and a second `run --demo` start keeps the data directory's copy."""
    from modelforge_ui.cli_commands import ensure_demo_model

    made = subprocess.run([sys.executable, "-m", "modelforge_ui.cli", "demo-model",
                           str(tmp_path / "copy")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MODELFORGE_HOME": str(tmp_path / "home")})
    assert made.returncode == 0, made.stderr[-2000:]
    assert "pre-training" not in made.stdout
    weights = (pretrained_demo / "model.safetensors").read_bytes()
    assert (tmp_path / "copy" / "model.safetensors").read_bytes() == weights

    served = tmp_path / "data" / "models" / "demo"
    ensure_demo_model(served)
    written = (served / "model.safetensors").stat().st_mtime_ns
    ensure_demo_model(served)  # the second start
    assert (served / "model.safetensors").stat().st_mtime_ns == written
    assert (served / "model.safetensors").read_bytes() == weights
