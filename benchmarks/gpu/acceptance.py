"""The whole product on a GPU box, driven as a user drives it: `modelforge run`, then HTTP.

    python benchmarks/gpu/acceptance.py product --family llama-3.2-1b --data DATA.jsonl --out DIR
    python benchmarks/gpu/acceptance.py matrix --family gemma-2-2b --family phi-3-mini \
        --data DATA.jsonl --out DIR
    python benchmarks/gpu/acceptance.py product --tiny --out /tmp/acc   # CPU dry run, demo model

Both parts start one real server (`python -m modelforge_ui.cli run`, the dashboard mounted) on a
fresh data directory, build each family's synthetic-weights model under its `models/`, and then
only talk HTTP: the REST API as docs/api.md describes it, and the dashboard's own handlers
through gradio_client (what the Playground and Benchmark tabs call).

`matrix`: per family, sft (16-bit LoRA, speed mode) and qlora (4-bit) for both providers. Per
cell: config check, VRAM estimate, start (queued behind the others), events polled to the end;
status, steady tokens/s and MFU, peak VRAM against the estimate, first and last loss, and the
started event's record of what ran (speed mode's decisions, Unsloth's patch evidence).

`product` (one small family): the matrix row, then health and doctor (the GPU seen), dpo and rlhf
on both providers, stop at a step and resume against the uninterrupted run, compare, the
adapter zip, the Playground's generation and merge export, the Training tab's MFU text, the
Benchmark tab's quick setting with its wait, and an out-of-memory run on purpose followed by a
health check.

Writes DIR/results.json (every request's outcome, each cell) and DIR/results.md (the tables).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_summary import WARMUP_STEPS, _median, environment  # noqa: E402

from trainers.tools.demo import SAMPLE_DIR, SAMPLE_PREFERENCES, SAMPLE_SFT  # noqa: E402

FINAL = ("succeeded", "failed", "stopped", "interrupted")
PROVIDERS = ("huggingface", "unsloth")
ESTIMATE_TOLERANCE = 0.10  # the estimate should be within 10% of the measured peak


# --- the server ------------------------------------------------------------------------------

class Server:
    """A real `modelforge run` with the dashboard, on a fresh data directory."""

    def __init__(self, data_dir: Path, roots: list[Path]):
        self.data_dir, self.port = data_dir, free_port()
        port = self.port
        self.url = f"http://127.0.0.1:{port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "modelforge_ui.cli", "run", "--port", str(port),
                "--data-dir", str(data_dir)]
        for root in roots:
            args += ["--allowed-root", str(root)]
        env = {**os.environ, "GRADIO_SSR_MODE": "false", "HF_HUB_OFFLINE": "1",
               "GRADIO_ANALYTICS_ENABLED": "false"}
        self.log_path = data_dir.parent / "server.log"
        started = time.time()
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log_path.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.http = httpx.Client(base_url=self.url, timeout=120)
        self.startup_s = self._wait_healthy(started)

    def _wait_healthy(self, started: float, timeout: float = 180) -> float:
        while time.time() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if self.http.get("/api/health", timeout=2).status_code == 200:
                    return round(time.time() - started, 1)
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server did not answer /api/health")

    def call(self, method: str, path: str, **kwargs) -> tuple[int, dict | bytes]:
        response = self.http.request(method, path, **kwargs)
        kind = response.headers.get("content-type", "")
        return response.status_code, response.json() if "json" in kind else response.content

    def gradio(self):
        from gradio_client import Client

        return Client(self.url + "/", verbose=False)

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- one run through the API ------------------------------------------------------------------

def submit(server: Server, config: dict) -> dict:
    """Check, estimate and start one config; the 202's run id, or the refusal."""
    record = {"config": config}
    code, body = server.call("POST", "/api/config/check", json=config)
    record["check"] = {"status": code, "ok": body.get("ok"), "problems": body.get("problems")}
    code, body = server.call("POST", "/api/config/estimate", json=config)
    record["estimate"] = {"status": code, **{k: body.get(k) for k in (
        "available", "peak_allocated_gib", "device_gib", "fits", "verdict", "speed_mode",
        "reason")}}
    code, body = server.call("POST", "/api/start_training", json=config)
    record["start"] = {**(body if isinstance(body, dict) else {}), "http_status": code}
    return record


def follow(server: Server, run_id: str, timeout: float, until_step: int | None = None) -> dict:
    """Poll the events as docs/api.md shows until the run ends (or reaches `until_step`)."""
    events, after, started = [], 0, time.time()
    while time.time() - started < timeout:
        code, page = server.call("GET", f"/api/runs/{run_id}/events", params={"after": after})
        events += page["events"]
        after = page["next_after"]
        step = max((e["step"] for e in events if e["type"] == "progress"), default=0)
        if until_step is not None and step >= until_step:
            return {"status": page["status"], "events": events}
        if page["status"] in FINAL and not page["events"]:
            return {"status": page["status"], "events": events}
        time.sleep(1)
    return {"status": "timeout", "events": events}


def run_once(server: Server, config: dict, timeout: float) -> dict:
    record = submit(server, config)
    if record["start"]["http_status"] != 202:
        return {**record, "status": "refused", "events": []}
    followed = follow(server, record["start"]["run_id"], timeout)
    cell = {**record, "run_id": record["start"]["run_id"], **summarize(followed["events"]),
            "status": followed["status"], "events": followed["events"]}
    return {**cell, "estimate_vs_peak": estimate_ratio(cell)}


def summarize(events: list[dict]) -> dict:
    """What a cell reports, from its events alone (as any client of the API sees them)."""
    started = next((e for e in events if e["type"] == "started"), {})
    progress = [e for e in events if e["type"] == "progress" and e.get("stage") != "reward_model"]
    end = events[-1] if events else {}
    steady = [e for e in progress if e["step"] > WARMUP_STEPS]
    return {
        "steps": end.get("steps"), "tokens_seen": end.get("tokens_seen"),
        "train_runtime_s": end.get("train_runtime_s"),
        "tokens_per_s_median": _median([e.get("tokens_per_s") for e in steady]),
        "mfu_median": _median([e.get("mfu") for e in steady]),
        "peak_gpu_mem_allocated_gib": end.get("peak_gpu_mem_allocated_gib"),
        "first_loss": progress[0].get("loss") if progress else None,
        "last_loss": progress[-1].get("loss") if progress else None,
        "losses": [e.get("loss") for e in progress],
        "error": {k: end.get(k) for k in ("error_type", "message", "hint", "remedies")}
        if end.get("type") == "failed" else None,
        "what_ran": {k: started.get(k) for k in (
            "device", "device_name", "device_memory_gib", "peak_tflops", "speed_mode",
            "per_device_train_batch_size", "gradient_accumulation_steps", "attention",
            "quantization", "dtype", "gradient_checkpointing", "trl_lm_head", "warnings",
            "unsloth", "architecture", "versions")},
    }


def estimate_ratio(cell: dict) -> float | None:
    """Estimated over measured peak; within 1 +/- ESTIMATE_TOLERANCE is the promise."""
    est, peak = cell["estimate"].get("peak_allocated_gib"), cell.get("peak_gpu_mem_allocated_gib")
    return round(est / peak, 3) if est and peak else None


# --- the matrix -------------------------------------------------------------------------------

def build_model(family: str, models_dir: Path, tiny: bool) -> Path:
    out = models_dir / family
    if not out.exists():
        if tiny:
            from trainers.tools.demo import build_demo_model

            build_demo_model(out)
        else:  # its own process: the GPU memory it used is free again when it exits
            subprocess.run([sys.executable, "-m", "trainers.benchmark.synthetic", family,
                            str(out)], check=True, cwd=ROOT)
    return out


def cell_configs(model: Path, data: Path, args) -> dict[str, dict]:
    base = {"model_name": str(model), "dataset": str(data), "task": "text-generation",
            "max_seq_length": args.seq, "max_steps": args.steps, "logging_steps": 1,
            "per_device_train_batch_size": args.batch, "learning_rate": 2e-4, "lora_r": 16,
            "lora_alpha": 16, "lora_dropout": 0.0, "seed": 0, "bf16": not args.tiny}
    cells = {}
    for provider in PROVIDERS:
        cells[f"{provider}/sft"] = {**base, "provider": provider, "strategy": "sft",
                                    "speed_mode": True}
        if not args.tiny:  # 4-bit needs CUDA
            cells[f"{provider}/qlora"] = {**base, "provider": provider, "strategy": "qlora",
                                          "use_4bit": True, "gradient_checkpointing": True}
    return cells


def run_matrix(server: Server, family: str, model: Path, data: Path, args) -> list[dict]:
    """Queue every cell of one family at once (the queue runs them in turn), then follow each."""
    records = []
    only = {c.split(":", 1)[1] for c in args.only if c.split(":", 1)[0] == family}
    for cell, config in cell_configs(model, data, args).items():
        if only and cell not in only:
            continue
        config["name"] = f"acceptance {family} {cell}"
        records.append({"family": family, "cell": cell, **submit(server, config)})
    for record in records:
        if record["start"]["http_status"] != 202:
            record["status"] = "refused"
            continue
        record["run_id"] = record["start"]["run_id"]
        followed = follow(server, record["run_id"], args.cell_timeout)
        record.update(summarize(followed["events"]), status=followed["status"])
        record["estimate_vs_peak"] = estimate_ratio(record)
        _, run = server.call("GET", f"/api/runs/{record['run_id']}")
        record["queued_ran_finished"] = [run.get(k) for k in ("created_at", "started_at",
                                                              "finished_at")]
        print(f"  {family} {record['cell']}: {record['status']} "
              f"{record.get('tokens_per_s_median')} tok/s, peak "
              f"{record.get('peak_gpu_mem_allocated_gib')} GiB", flush=True)
    spans = sorted(r["queued_ran_finished"][1:] for r in records if r.get("queued_ran_finished"))
    overlap = any(b[0] < a[1] for a, b in zip(spans, spans[1:]) if a[1] and b[0])
    for record in records:
        record["ran_alone_on_the_gpu"] = not overlap  # one job per GPU: the queue's promise
    return records


# --- the product walk-through -----------------------------------------------------------------

def check_system(server: Server) -> dict:
    code, health = server.call("GET", "/api/health")
    _, doctor = server.call("GET", "/api/doctor", params={"refresh": "true"})
    gpus = [c for c in doctor.get("checks", []) if "gpu" in c["name"].lower()]
    return {"startup_s": server.startup_s, "health": {"status": code, **health},
            "doctor_status": doctor.get("status"), "doctor_gpu_checks": gpus,
            "doctor_errors": [c for c in doctor.get("checks", []) if c["status"] == "error"]}


def preference_cells(server: Server, model: Path, args) -> list[dict]:
    base = {"model_name": str(model), "dataset": str(SAMPLE_PREFERENCES), "max_seq_length": 256,
            "max_prompt_length": 128, "per_device_train_batch_size": 4, "logging_steps": 1,
            "learning_rate": 5e-5, "lora_r": 16, "lora_alpha": 16, "lora_dropout": 0.0,
            "bf16": not args.tiny, "completion_only_loss": False, "seed": 0}
    out = []
    for provider in PROVIDERS:
        for strategy, extra in (("dpo", {"max_steps": 8, "beta": 0.1}),
                                ("rlhf", {"max_steps": 4, "reward_model_steps": 4,
                                          "max_new_tokens": 32, "num_generations": 4})):
            config = {**base, **extra, "provider": provider, "strategy": strategy,
                      "name": f"acceptance {provider} {strategy}"}
            cell = run_once(server, config, args.cell_timeout)
            cell.pop("events")
            print(f"  {provider} {strategy}: {cell['status']}", flush=True)
            out.append({"cell": f"{provider}/{strategy}", **cell})
    return out


def stop_and_resume(server: Server, model: Path, data: Path, args) -> dict:
    """Stop at a step boundary, resume from the checkpoint, compare with an uninterrupted run."""
    config = {"model_name": str(model), "dataset": str(data), "provider": "huggingface",
              "max_seq_length": args.seq, "max_steps": 12, "save_steps": 4, "logging_steps": 1,
              "per_device_train_batch_size": args.batch, "learning_rate": 2e-4, "lora_r": 16,
              "lora_alpha": 16, "lora_dropout": 0.0, "seed": 0, "bf16": not args.tiny}
    whole = run_once(server, {**config, "name": "acceptance uninterrupted"}, args.cell_timeout)
    run_id = submit(server, {**config, "name": "acceptance to stop"})["start"]["run_id"]
    follow(server, run_id, args.cell_timeout, until_step=6)
    code, _ = server.call("POST", f"/api/runs/{run_id}/stop")
    stopped = follow(server, run_id, args.cell_timeout)
    rcode, resumed = server.call("POST", f"/api/runs/{run_id}/resume")
    after = follow(server, resumed["run_id"], args.cell_timeout) if rcode == 202 else {}
    reference, continued = step_losses(whole["events"]), step_losses(after.get("events", []))
    common = sorted(set(reference) & set(continued))
    code_c, compare = server.call("GET", "/api/compare",
                                  params={"ids": f"{whole['run_id']},{resumed.get('run_id')}"})
    return {"stop_status": code, "stopped_as": stopped["status"],
            "stopped_at_step": max(step_losses(stopped["events"]), default=None),
            "resume_status": rcode, "resumed": resumed, "resumed_as": after.get("status"),
            "resumed_steps": common,
            "max_abs_loss_diff": max((abs(reference[s] - continued[s]) for s in common),
                                     default=None),
            "compare": {"status": code_c, "differing": compare.get("differing")
                        if isinstance(compare, dict) else None},
            "uninterrupted_run_id": whole["run_id"]}


def step_losses(events: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events
            if e["type"] == "progress" and e.get("loss") is not None}


def adapter_zip(server: Server, run_id: str) -> dict:
    code, body = server.call("GET", f"/api/runs/{run_id}/adapter")
    names = zipfile.ZipFile(io.BytesIO(body)).namelist() if code == 200 else []
    return {"status": code, "bytes": len(body) if code == 200 else None,
            "has_weights": any(n.endswith("adapter_model.safetensors") for n in names),
            "has_card": any(n.endswith("README.md") for n in names), "files": names[:20]}


def playground(server: Server, run_id: str) -> dict:
    """What the Playground tab calls: both models streamed, then the merge export."""
    client = server.gradio()
    try:
        t0 = time.time()
        job = client.submit(run_id, "### Instruction:\nSay hi\n\n### Response:\n", 16, 0,
                            api_name="/generate")
        updates = list(job)
        adapter, base, status = job.result()
        generate_s = round(time.time() - t0, 1)
        t0 = time.time()
        log, result = client.predict(run_id, "bfloat16", "", api_name="/export_model")
        return {"generate_status": status, "generate_s": generate_s, "updates": len(updates),
                "adapter_chars": len(adapter), "base_chars": len(base),
                "export_result": result, "export_s": round(time.time() - t0, 1),
                "export_log": log.splitlines()[-6:]}
    finally:
        client.close()


def training_tab_text(server: Server, run_id: str) -> dict:
    """The Training tab's status text for a run: the function its timer renders, given the
    run record the API returns (a page's current run is per browser session, not an API input)."""
    from modelforge_ui import views

    _, run = server.call("GET", f"/api/runs/{run_id}")
    markdown = views.progress_markdown(run)
    return {"shows_mfu": " MFU " in markdown, "text": markdown[:1500]}


def benchmark_tab(server: Server, model: Path, data: Path, args) -> dict:
    """The Benchmark tab as a person uses it: model and data typed in, the Quick setting
    button, Run; then its results view polled until the verdict."""
    from modelforge_ui.tabs.benchmark import spec_form

    form = spec_form()
    typed = {"model": str(model), "dataset": str(data), "name": "acceptance quick"}
    if args.tiny:
        typed.update(max_seq_length=64, batch_size=2, optimizer="adamw_torch",
                     min_example_tokens=0)
    client = server.gradio()
    t0 = time.time()
    try:
        *values, note = client.predict(*form.from_dict(typed), api_name="/benchmark_quick")
        message, _ = client.predict(*values, api_name="/run_benchmark")
        run_id = message.split("`")[1]
        out = None
        while time.time() - t0 < args.bench_timeout:
            out = client.predict(run_id, api_name="/benchmark_results")
            if any(f"**{s}**" in out[0] for s in ("succeeded", "failed", "stopped")):
                break
            time.sleep(3)
    finally:
        client.close()
    _, run = server.call("GET", f"/api/runs/{run_id}")
    results = Path(run["run_dir"]) / "results.json"
    report = json.loads(results.read_text()) if results.exists() else {}
    return {"run_id": run_id, "wait_s": round(time.time() - t0, 1), "status": run["status"],
            "quick_note": note, "verdict": out[8] if out else None,
            "table": report.get("table"), "checks": report.get("checks"),
            "variant_wall_s": {r.get("name"): r.get("process_wall_s")
                                for r in report.get("runs", [])}}


def out_of_memory(server: Server, model: Path, data: Path, args) -> dict:
    """A run that cannot fit, on purpose: it must end as oom with its remedies, the server
    still serving."""
    config = {"model_name": str(model), "dataset": str(data), "provider": "huggingface",
              "max_seq_length": args.seq, "max_steps": 3, "per_device_train_batch_size": 64,
              "gradient_checkpointing": False, "padding_free": False, "bf16": not args.tiny,
              "lora_r": 16, "lora_alpha": 16, "lora_dropout": 0.0, "name": "acceptance oom"}
    cell = run_once(server, config, args.cell_timeout)
    t0 = time.time()
    code, _ = server.call("GET", "/api/health")
    return {"status": cell["status"], "error": cell["error"], "estimate": cell["estimate"],
            "check": cell["check"], "start": cell["start"].get("http_status"),
            "health_after": code, "health_ms": round(1000 * (time.time() - t0), 1)}


# --- the report -------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    lines = [f"# Acceptance: {results['part']} on {results['gpu']}", "",
             f"{results['date_utc']}, `{results['command']}`", "",
             "| family | cell | status | tokens/s | MFU | peak GiB | estimate GiB | est/peak "
             "| micro-batch x accum | first -> last loss | what ran |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        ran = c.get("what_ran") or {}
        mfu = f"{100 * c['mfu_median']:.1f}%" if c.get("mfu_median") else "-"
        loss = (f"{c['first_loss']:.3f} -> {c['last_loss']:.3f}"
                if c.get("first_loss") is not None and c.get("last_loss") is not None else "-")
        why = (c.get("error") or {}).get("message") or ""
        lines.append(
            f"| {c.get('family', results.get('family', ''))} | {c['cell']} | {c['status']} "
            f"| {c.get('tokens_per_s_median') or '-'} | {mfu} "
            f"| {c.get('peak_gpu_mem_allocated_gib') or '-'} "
            f"| {c['estimate'].get('peak_allocated_gib') or '-'} "
            f"| {c.get('estimate_vs_peak') or '-'} "
            f"| {ran.get('per_device_train_batch_size')} x {ran.get('gradient_accumulation_steps')} "
            f"| {loss} | {ran.get('attention')}, {ran.get('quantization') or '16-bit'}"
            f"{', unsloth patched' if ran.get('unsloth') else ''} {why[:120]} |")
    lines += ["", "Other checks (results.json has each in full):", ""]
    for key, value in results.items():
        if key not in ("cells", "environment", "part", "gpu", "date_utc", "command"):
            lines.append(f"- **{key}**: `{json.dumps(value, default=str)[:600]}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["product", "matrix"])
    parser.add_argument("--family", action="append", default=[],
                        help="a family of trainers/benchmark/synthetic.py (repeat)")
    parser.add_argument("--data", type=Path, default=SAMPLE_SFT, help="sft data (jsonl)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mf-acceptance"))
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--cell-timeout", type=float, default=600)
    parser.add_argument("--bench-timeout", type=float, default=400)
    parser.add_argument("--skip", action="append", default=[],
                        help="product steps to leave out: adapter_zip, training_tab, "
                             "playground, preference, resume, oom, benchmark")
    parser.add_argument("--only", action="append", default=[], metavar="FAMILY:CELL",
                        help="run only this matrix cell of FAMILY, e.g. gemma-2-2b:unsloth/sft "
                             "(repeat); a family not named runs every cell")
    parser.add_argument("--tiny", action="store_true", help="the demo model on the CPU")
    args = parser.parse_args(argv)
    if args.tiny:
        args.family, args.seq, args.batch, args.steps = ["demo"], 128, 4, 6
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    data = args.data.resolve()
    models = args.work / "data" / "models"
    built = {}
    for family in args.family:
        t0 = time.time()
        built[family] = build_model(family, models, args.tiny)
        print(f"built {family} in {time.time() - t0:.0f} s", flush=True)
    server = Server(args.work / "data", [data.parent, SAMPLE_DIR])
    env = environment()
    results = {"part": args.part, "gpu": env.get("nvidia_smi") or "CPU",
               "date_utc": env["date_utc"], "command": " ".join(sys.argv), "environment": env,
               "cells": []}
    try:
        for name, step in walk(server, built, data, args, results):
            if name in args.skip:
                continue
            t0 = time.time()
            try:
                outcome = step()
            except Exception as exc:  # a finding: recorded, and the walk goes on
                outcome = {"error": f"{type(exc).__name__}: {exc}"}
            if isinstance(outcome, list):
                results["cells"] += outcome
            else:
                results[name] = outcome
            print(f"{name}: {time.time() - t0:.0f} s", flush=True)
            save(results, args.out)  # a call cut short keeps what it finished
        results["health_at_end"] = server.call("GET", "/api/health")[0]
    finally:
        server.close()
        (args.out / "server.log").write_bytes(server.log_path.read_bytes()[-200_000:])
        save(results, args.out)
    print(markdown(results))
    return 0


def walk(server: Server, built: dict[str, Path], data: Path, args, results: dict):
    """(name, step) in the order they run; the product part's later steps use the matrix's
    first finished sft run."""
    yield "system", lambda: check_system(server)
    for family, model in built.items():
        yield f"matrix {family}", lambda m=model, f=family: run_matrix(server, f, m, data, args)
    if args.part != "product":
        return
    model = next(iter(built.values()))
    finished = next((c["run_id"] for c in results["cells"]
                     if c["status"] == "succeeded" and c["cell"].endswith("/sft")), None)
    results["tokens_seen_by_provider"] = {c["cell"]: c.get("tokens_seen")
                                          for c in results["cells"] if c["cell"].endswith("/sft")}
    if finished:
        yield "adapter_zip", lambda: adapter_zip(server, finished)
        yield "training_tab", lambda: training_tab_text(server, finished)
        yield "playground", lambda: playground(server, finished)
    yield "preference", lambda: preference_cells(server, model, args)
    yield "resume", lambda: stop_and_resume(server, model, data, args)
    yield "oom", lambda: out_of_memory(server, model, data, args)
    yield "benchmark", lambda: benchmark_tab(server, model, data, args)


def save(results: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "results.md").write_text(markdown(results))


if __name__ == "__main__":
    sys.exit(main())
