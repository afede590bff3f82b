"""Start the real server (`modelforge run` or `python app.py`) in a subprocess for UI tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90,
                 headers: dict | None = None) -> float:
    """Seconds until GET /api/health answers 200; fails with the server's log otherwise."""
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/health", headers=headers, timeout=2).status_code == 200:
                return time.time() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"no 200 from {url}/api/health in {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def running_server(args: list[str], log: Path, env: dict | None = None, port: int | None = None):
    """Yield the base URL of a server started with `python ARGS`; stop it afterwards."""
    port = port or free_port()
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    token = full_env.get("MODELFORGE_TOKEN")
    try:
        auth = {"Authorization": f"Bearer {token}"} if token else None
        wait_healthy(url, proc, log, headers=auth)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def modelforge_run_args(port: int, data_dir: Path, *roots: Path) -> list[str]:
    args = ["-m", "modelforge_ui.cli", "run", "--port", str(port), "--data-dir", str(data_dir)]
    for root in roots:
        args += ["--allowed-root", str(root)]
    return args
