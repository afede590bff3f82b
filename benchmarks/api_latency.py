"""p95 latency of GET /api/health and GET /api/runs/{id} while a run trains.

Starts a real `modelforge run` server (dashboard mounted, as shipped) on a free loopback port
with a fresh data directory and the demo model, measures both endpoints idle, then again while
a real training run is between its first and last step, and writes the numbers with the
command and the environment to benchmarks/results/api_latency_<device>.json.

    python benchmarks/api_latency.py [--steps 60] [--out benchmarks/results/api_latency_cpu.json]

Requests are sequential, like a dashboard or CLI poller, with --interval-s between them; each
latency is the client-side wall time of one request (httpx, keep-alive) measured with
time.perf_counter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def stats_ms(samples: list[float]) -> dict:
    ms = [s * 1000 for s in samples]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2),
            "p95_ms": round(percentile(ms, 0.95), 2), "p99_ms": round(percentile(ms, 0.99), 2),
            "max_ms": round(max(ms), 2), "mean_ms": round(statistics.fmean(ms), 2)}


def timed_get(client: httpx.Client, path: str) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, response


def measure(client: httpx.Client, run_id: str, interval_s: float, until) -> dict:
    samples: dict[str, list[float]] = {"health": [], "run": []}
    while not until():
        elapsed, _ = timed_get(client, "/api/health")
        samples["health"].append(elapsed)
        elapsed, _ = timed_get(client, f"/api/runs/{run_id}")
        samples["run"].append(elapsed)
        time.sleep(interval_s)
    return samples


def start_server(data_dir: Path, model_dir: Path, port: int, log: Path,
                 extra_args: list[str] | None = None) -> subprocess.Popen:
    from trainers.tools.demo import SAMPLE_DIR

    cmd = [sys.executable, "-m", "modelforge_ui.cli", "run", "--port", str(port),
           "--data-dir", str(data_dir), "--allowed-root", str(model_dir),
           "--allowed-root", str(SAMPLE_DIR), *(extra_args or [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MODELFORGE_TOKEN", None)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not start")


def environment() -> dict:
    libs = {}
    for name in ("fastapi", "starlette", "uvicorn", "gradio", "torch", "transformers", "trl",
                 "peft"):
        try:
            libs[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing library is recorded as such
            libs[name] = "missing"
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
            "gpu": "none (CPU only)" if shutil.which("nvidia-smi") is None else "see nvidia-smi",
            "libraries": libs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps of the run")
    parser.add_argument("--interval-s", type=float, default=0.02)
    parser.add_argument("--idle-samples", type=int, default=200)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "api_latency_cpu.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from trainers.tools.demo import SAMPLE_SFT, build_demo_model

    work = Path(tempfile.mkdtemp(prefix="modelforge-latency-"))
    model_dir = build_demo_model(work / "demo-model")
    port = free_port()
    log = work / "server.log"
    proc = start_server(work / "data", model_dir, port, log)
    config = {"provider": "huggingface", "model_name": str(model_dir), "max_seq_length": 128,
              "dataset": str(SAMPLE_SFT), "max_steps": args.steps,
              "per_device_train_batch_size": 16, "gradient_accumulation_steps": 2,
              "lora_r": 8, "lora_alpha": 16, "logging_steps": 1}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            idle = {"health": [], "run": []}
            probe = client.post("/api/start_training", json={**config, "max_steps": 1,
                                                             "name": "idle probe"})
            probe_id = probe.json()["run_id"]
            while client.get(f"/api/runs/{probe_id}").json()["status"] in ("queued", "running"):
                time.sleep(0.5)
            for _ in range(args.idle_samples):  # nothing running: the baseline
                idle["health"].append(timed_get(client, "/api/health")[0])
                idle["run"].append(timed_get(client, f"/api/runs/{probe_id}")[0])
                time.sleep(args.interval_s)

            run_id = client.post("/api/start_training", json=config).json()["run_id"]

            def training() -> bool:
                run = client.get(f"/api/runs/{run_id}").json()
                return run["status"] == "running" and (run["progress"] or {}).get("step")

            while not training():
                if client.get(f"/api/runs/{run_id}").json()["status"] not in ("queued",
                                                                               "running"):
                    raise RuntimeError("the run ended before its first step")
                time.sleep(0.1)

            def finished() -> bool:
                return client.get(f"/api/runs/{run_id}").json()["status"] != "running"

            busy = measure(client, run_id, args.interval_s, finished)
            run = client.get(f"/api/runs/{run_id}").json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result = {
        "what": "client-side latency of sequential GETs against `modelforge run` on 127.0.0.1 "
                "(dashboard mounted), idle and while a real training run was between its first "
                "and last step",
        "command": "python " + " ".join([str(Path(__file__).relative_to(ROOT)),
                                         *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "training_run": {"config": config, "status": run["status"],
                         "steps": (run["summary"] or {}).get("steps"),
                         "train_runtime_s": (run["summary"] or {}).get("train_runtime_s"),
                         "tokens_per_s": (run["summary"] or {}).get("tokens_per_s")},
        "idle": {"GET /api/health": stats_ms(idle["health"]),
                 "GET /api/runs/{id}": stats_ms(idle["run"])},
        "while_training": {"GET /api/health": stats_ms(busy["health"]),
                           "GET /api/runs/{id}": stats_ms(busy["run"])},
    }
    write_result(args.out, result, ("idle", "while_training", "training_run"))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def write_result(out: Path, result: dict, shown: tuple[str, ...]) -> None:
    """Write the result as JSON and print the keys `shown`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in shown}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
