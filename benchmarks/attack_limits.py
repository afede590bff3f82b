"""Issue 29's reproductions fired at once against a fresh server: is it still answering, and
how much memory do it and its helpers take?

Starts a real `modelforge run` (dashboard mounted, tokenless, on a free loopback port) with a
fresh data directory, the demo model and an allowed folder holding the data bombs (a 2 M-row
dictionary-encoded Parquet file of a few hundred KB, a CSV with 10^6 columns), and finished runs
to download, rename and delete. Then, for --seconds, attacker threads repeat each reproduction
(previews with the demo tokenizer, config checks and previews of the bombs, doctor refreshes,
adapter zips, 300 MB dashboard bodies, lone surrogates and huge numbers, renames racing
deletes), each pausing --pause-s between requests, while one client times GET /api/health every
50 ms and a sampler sums the resident memory (RSS and PSS) of the server and every process under
it each second. The attackers run in a process of their own at --attacker-niceness (a client
elsewhere does not share the server's CPU; 0 makes them compete as equals); the timing client
runs at the server's priority, and also times GET /api/runs?limit=1 (a route served from the
thread pool, which the expensive requests would otherwise fill). Writes the latencies, the memory peaks and the answers each attack got, with the
command and the environment, to benchmarks/results/attack_limits_cpu.json.

    python benchmarks/attack_limits.py [--seconds 60] [--out benchmarks/results/attack_limits_cpu.json]

Loopback only; bounded in time (--seconds) and in threads (one per attacker, listed in ATTACKS).
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_latency import (ROOT, environment, free_port, start_server, stats_ms,  # noqa: E402
                         write_result)

BIG_BODY = 300 * 2**20


def write_bombs(folder: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    rows = 2_000_000
    column = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()),
                                            pa.array(["x" * 1000]))
    parquet = folder / "bomb.parquet"
    pq.write_table(pa.table({"text": column}), parquet, compression="zstd")
    wide = folder / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(10**6)) + "\n" + "1," * (10**6 - 1) + "1\n")
    return {"parquet": parquet, "csv": wide}


def finished_runs(data_dir: Path, count: int) -> list[str]:
    """Succeeded runs with a small adapter, recorded before the server starts."""
    from trainers.runs.registry import RunRegistry

    registry, ids = RunRegistry(data_dir), []
    for _ in range(count):
        run = registry.create(None, source="bench", config_dict={"model_name": "m",
                                                                "dataset": "d"})
        adapter = Path(run["run_dir"]) / "adapter"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text("{}")
        (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 2**20)
        (Path(run["run_dir"]) / "events.jsonl").write_text('{"type": "finished"}\n')
        registry.set_status(run["id"], "succeeded", {"adapter_dir": str(adapter)})
        ids.append(run["id"])
    return ids


def big_body(port: int) -> str:
    """A 300 MB queue/join announced by Content-Length, a few bytes sent: the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST /gradio_api/queue/join HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {BIG_BODY}\r\n\r\n"
                     '{"data": ['.encode())
        return sock.recv(4096).split(b"\r\n")[0].decode().split(" ")[1]


def attacks(model: Path, bombs: dict, runs: list[str], port: int) -> dict:
    """name -> (threads, one request: client -> status code)."""
    from trainers.tools.demo import SAMPLE_SFT

    base = {"model_name": str(model), "dataset": str(SAMPLE_SFT), "max_seq_length": 128}
    surrogate = json.dumps({**base, "name": "\ud800"})
    counter = iter(range(10**9))

    def post(client, path, body):
        return client.post(path, json=body).status_code

    def rename_or_delete(client):
        i = next(counter)
        run = runs[i % len(runs)]
        if i % 2:
            return client.delete(f"/api/runs/{run}").status_code
        return client.patch(f"/api/runs/{run}", json={"name": f"n{i}"}).status_code

    return {
        "preview with the tokenizer (x20)": (20, lambda c: post(
            c, "/api/datasets/preview", {"dataset": str(SAMPLE_SFT), "model_name": str(model)})),
        "preview of the parquet bomb (x2)": (2, lambda c: post(
            c, "/api/datasets/preview", {"dataset": str(bombs["parquet"])})),
        "config check of the parquet bomb (x2)": (2, lambda c: post(
            c, "/api/config/check", {**base, "dataset": str(bombs["parquet"])})),
        "preview of the 10^6-column CSV (x2)": (2, lambda c: post(
            c, "/api/datasets/preview", {"dataset": str(bombs["csv"])})),
        "doctor refresh (x10)": (10, lambda c: c.get("/api/doctor?refresh=true").status_code),
        "adapter zip (x4)": (4, lambda c: c.get(
            f"/api/runs/{runs[next(counter) % len(runs)]}/adapter").status_code),
        "300 MB queue/join (x2)": (2, lambda c: int(big_body(port))),
        "lone surrogate in name (x1)": (1, lambda c: c.post(
            "/api/config/estimate", content=surrogate,
            headers={"content-type": "application/json"}).status_code),
        "max_seq_length 10**400 (x1)": (1, lambda c: post(
            c, "/api/config/estimate", {**base, "max_seq_length": 10**400})),
        "rename racing delete (x4)": (4, rename_or_delete),
    }


def run_attackers(planned: dict, url: str, seconds: float, pause_s: float, niceness: int,
                  results) -> None:
    """In the attackers' own process: every attacker thread for `seconds`; the answers each
    attack got go back through `results`."""
    os.nice(niceness)
    stop = threading.Event()
    answers = {name: collections.Counter() for name in planned}
    threads = [threading.Thread(target=attacker, args=(url, request, answers[name], stop,
                                                       pause_s), daemon=True)
               for name, (count, request) in planned.items() for _ in range(count)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=300)
    results.put({name: dict(counter) for name, counter in answers.items()})


def attacker(url: str, request, answers: collections.Counter, stop: threading.Event,
             pause_s: float) -> None:
    with httpx.Client(base_url=url, timeout=300) as client:
        while not stop.is_set():
            try:
                answers[str(request(client))] += 1
            except (httpx.HTTPError, OSError) as exc:
                answers[type(exc).__name__] += 1
            stop.wait(pause_s)


def memory_gib(proc: psutil.Process) -> tuple[float, float, int]:
    """(RSS, PSS) in GiB of the server and every process under it, and how many there are."""
    rss = pss = 0
    family = [proc, *proc.children(recursive=True)]
    for member in family:
        try:
            info = member.memory_full_info()
            rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rss / 2**30, pss / 2**30, len(family)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--pause-s", type=float, default=0.1,
                        help="each attacker's pause between its requests")
    parser.add_argument("--skip", action="append", default=[], metavar="WORDS",
                        help="leave out the attacks whose name contains WORDS (repeatable), to "
                             "see what each costs")
    parser.add_argument("--attacker-niceness", type=int, default=5,
                        help="the attackers' process's niceness above the server's")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "attack_limits_cpu.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from trainers.tools.demo import build_demo_model

    work = Path(tempfile.mkdtemp(prefix="modelforge-attack-"))
    model = build_demo_model(work / "demo-model")
    bombs = write_bombs(work / "bombs")
    runs = finished_runs(work / "data", 8)
    port = free_port()
    proc = start_server(work / "data", model, port, work / "server.log",
                        extra_args=["--allowed-root", str(work / "bombs")])
    url = f"http://127.0.0.1:{port}"
    server = psutil.Process(proc.pid)
    results = multiprocessing.Queue()
    planned = {name: attack for name, attack in attacks(model, bombs, runs, port).items()
               if not any(words in name for words in args.skip)}
    attackers = multiprocessing.get_context("fork").Process(
        target=run_attackers, args=(planned, url, args.seconds,
                                    args.pause_s, args.attacker_niceness, results))
    health, runs_page, memory = [], [], []
    load_at_start = os.getloadavg()
    try:
        idle = memory_gib(server)
        attackers.start()
        end = time.monotonic() + args.seconds
        next_sample = 0.0
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < end:
                for path, samples in (("/api/health", health), ("/api/runs?limit=1", runs_page)):
                    start = time.perf_counter()
                    assert client.get(path).status_code == 200
                    samples.append(time.perf_counter() - start)
                if time.monotonic() >= next_sample:
                    memory.append(memory_gib(server))
                    next_sample = time.monotonic() + 1.0
                time.sleep(0.05)
        answers = results.get(timeout=600)
        attackers.join()
    finally:
        if attackers.is_alive():
            attackers.kill()
        proc.terminate()
        proc.wait(timeout=30)
    result = {
        "what": "GET /api/health and GET /api/runs?limit=1 latency (sequential, one pair every "
                "50 ms) and the summed resident memory "
                "of the server and its helper processes (sampled each second) while issue 29's "
                "reproductions ran at once against `modelforge run` on 127.0.0.1 (dashboard "
                "mounted, default limits)",
        "command": "python " + " ".join([str(Path(__file__).relative_to(ROOT)),
                                         *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "load_average_at_start": load_at_start,
        "seconds": args.seconds, "attacker_pause_s": args.pause_s,
        "attacker_niceness": args.attacker_niceness,
        "GET /api/health": stats_ms(health),
        "GET /api/runs?limit=1": stats_ms(runs_page),
        "memory_gib": {"idle_rss": round(idle[0], 3), "idle_pss": round(idle[1], 3),
                       "peak_rss": round(max(m[0] for m in memory), 3),
                       "peak_pss": round(max(m[1] for m in memory), 3),
                       "peak_processes": max(m[2] for m in memory),
                       "samples": len(memory)},
        "answers": answers,
    }
    write_result(args.out, result, ("GET /api/health", "GET /api/runs?limit=1", "memory_gib",
                                    "answers"))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
