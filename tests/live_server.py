"""A real `modelforge run` server on 127.0.0.1 (a free port) in a subprocess, for the API tests.

Nothing is faked: requests go over HTTP to uvicorn, runs are real worker processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 300  # a demo-model run takes ~10 s alone; the test machine is shared and slow
TERMINAL = ("succeeded", "failed", "stopped", "interrupted")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, data_dir: Path, *args: str, token: str | None = None,
                 env: dict | None = None, dashboard: bool = False):
        self.data_dir = Path(data_dir)
        self.args = list(args) + ([] if dashboard else ["--no-dashboard"])
        self.token = token
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.env.pop("MODELFORGE_TOKEN", None)
        if token:
            self.env["MODELFORGE_TOKEN"] = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 120) -> "LiveServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "modelforge_ui.cli", "run", "--port", str(self.port),
               "--data-dir", str(self.data_dir), *self.args]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.client().get("/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log()}")

    def client(self, token: str | None = "default", timeout: float = 60) -> httpx.Client:
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server alone (its workers run in their own sessions and survive)."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        """Stop the server and kill the workers this test started (by their recorded pids)."""
        self.stop()
        kill_workers(self.data_dir)


def kill_workers(data_dir: Path) -> None:
    from trainers.runs.registry import RunRegistry
    from trainers.runs.manager import worker_alive

    if not (Path(data_dir) / "modelforge.db").exists():
        return
    for run in RunRegistry(data_dir).list(statuses=("running",)):
        if worker_alive(run["pid"], run["run_dir"]):
            os.killpg(run["pid"], signal.SIGKILL)


def wait_status(client: httpx.Client, run_id: str, statuses=TERMINAL,
                timeout: float = RUN_TIMEOUT_S) -> dict:
    deadline = time.time() + timeout
    run = None
    while time.time() < deadline:
        response = client.get(f"/api/runs/{run_id}")
        assert response.status_code == 200, response.text
        run = response.json()
        if run["status"] in statuses:
            return run
        time.sleep(0.25)
    raise AssertionError(f"run {run_id} still {run and run['status']} after {timeout} s")


def wait_event(client: httpx.Client, run_id: str, type_: str, timeout: float = RUN_TIMEOUT_S,
               **match) -> dict:
    """The first event of this type (whose fields match), polling the events endpoint."""
    deadline, after = time.time() + timeout, 0
    while time.time() < deadline:
        page = client.get(f"/api/runs/{run_id}/events", params={"after": after}).json()
        for event in page["events"]:
            if event["type"] == type_ and all(event.get(k) == v for k, v in match.items()):
                return event
        after = page["next_after"]
        if page["status"] in TERMINAL and not page["events"]:
            raise AssertionError(f"run {run_id} ended ({page['status']}) without a {type_} "
                                 f"event {match}")
        time.sleep(0.2)
    raise AssertionError(f"no {type_} event {match} in run {run_id} after {timeout} s")


def start_run(client: httpx.Client, config: dict) -> str:
    response = client.post("/api/start_training", json=config)
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def slow_config(tiny_config, **overrides) -> dict:
    """A real run whose steps take ~1 s each on a CPU, so a test can act in the middle of it."""
    return tiny_config(**{"max_steps": 8, "per_device_train_batch_size": 16,
                          "gradient_accumulation_steps": 32, **overrides})
