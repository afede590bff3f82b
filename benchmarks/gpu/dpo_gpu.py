"""GPU evidence for dpo: a Llama-3.2-1B-shaped model trained with DPO through the real worker,
provider huggingface, then unsloth, each in its own process (`python -m trainers.train.worker RUN_DIR`).

    python benchmarks/gpu/dpo_gpu.py --out $OUT/dpo_1b          # on the CUDA machine
    python benchmarks/gpu/dpo_gpu.py --tiny --out /tmp/dpo-smoke  # CPU smoke test of the script

The model: random-init weights with Llama-3.2-1B's shape (hidden 2048, intermediate 8192, 16
layers, 32 heads, 8 KV heads, vocab 128256, tied embeddings), made on the GPU and saved in bf16
by trainers.benchmark.synthetic. There is no Llama tokenizer offline, so the bundled demo
tokenizer (2048 tokens) is saved with it: its ids all lie below 128256, so every id is valid for
the 128256-row embedding, and tokens/s are per demo-tokenizer token. Speed and memory are the
architecture's (the 128256-row LM head included); the DPO losses are not a trained model's.

Per provider: steady-state tokens/s (median over the progress events after the warm-up steps;
non-padding tokens of the chosen and the rejected sequences, which DPO both runs), peak VRAM
(torch max allocated from the finished event; max reserved seen in progress events), first and
last reward margin, wall time, which trainer class ran and the started event's record of what
ran. Writes results.json (with the exact command and environment), results.md and each run's
events to --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_summary import WARMUP_STEPS, environment, summarize_run  # noqa: E402

from trainers.config import build_config  # noqa: E402
from trainers.events import read_events  # noqa: E402
from trainers.runs.process import create_run_dir, launch, worker_command  # noqa: E402

PROVIDERS = ("huggingface", "unsloth")


def build_model(out: Path, tiny: bool) -> Path:
    """The demo model (--tiny) or the synthetic Llama-3.2-1B shape, each in its own process so
    this driver never imports torch (or unsloth) itself."""
    if tiny:
        code = "import sys; from trainers.tools.demo import build_demo_model as b; b(sys.argv[1])"
        cmd = [sys.executable, "-c", code, str(out)]
    else:
        cmd = [sys.executable, "-m", "trainers.benchmark.synthetic", "llama-3.2-1b", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def dpo_config(provider: str, model: Path, args) -> dict:
    return {"provider": provider, "model_name": str(model), "strategy": "dpo",
            "dataset": str(Path(args.data).resolve()), "max_seq_length": args.seq,
            "max_prompt_length": args.seq // 2, "per_device_train_batch_size": args.batch,
            "max_steps": args.steps, "learning_rate": 5e-5, "beta": 0.1,
            "dpo_loss_type": "sigmoid", "lora_r": 16, "lora_alpha": 16, "lora_dropout": 0.0,
            "target_modules": "auto", "bf16": not args.tiny, "gradient_checkpointing": True,
            "logging_steps": 1, "seed": 0, "name": f"dpo-gpu-{provider}"}


def run_provider(provider: str, model: Path, args, runs_dir: Path) -> dict:
    cfg = build_config(dpo_config(provider, model, args))
    run_dir = create_run_dir(cfg, runs_dir, f"dpo-{provider}")
    t0 = time.time()
    proc = launch(run_dir)
    try:
        returncode = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        returncode = proc.wait()
    wall = time.time() - t0
    result = summarize(provider, run_dir, returncode, wall)
    result["worker_command"] = " ".join(worker_command(run_dir))
    result["config"] = json.loads((run_dir / "config.json").read_text())
    shutil.copy(run_dir / "events.jsonl", args.out / f"dpo-{provider}.events.jsonl")
    if returncode != 0:
        log = (run_dir / "train.log").read_text(errors="replace")
        result["log_tail"] = log[-3000:]
    return result


def summarize(provider: str, run_dir: Path, returncode: int, wall: float) -> dict:
    """The common read-out plus DPO's reward margins and the trainer class that ran."""
    events = read_events(run_dir)
    steps = [e for e in events if e["type"] == "progress"]
    end = events[-1] if events else {}
    margins = [e["metrics"].get("rewards/margins") for e in steps]
    return {"provider": provider, **summarize_run(run_dir, returncode, wall),
            "first_reward_margin": margins[0] if margins else None,
            "last_reward_margin": margins[-1] if margins else None,
            "trainer_class": end.get("trainer_class")}


def markdown(results: list[dict], args) -> str:
    shape = "demo model (CPU smoke test)" if args.tiny else \
        "synthetic weights, Llama-3.2-1B shape"
    lines = [f"DPO, {shape}: seq {args.seq} (prompt <= {args.seq // 2}), batch {args.batch} "
             f"pairs, {args.steps} steps ({WARMUP_STEPS} warm-up), LoRA r16 all linear, "
             "gradient checkpointing, through `python -m trainers.train.worker`.", "",
             "| provider | status | tokens/s (median, min-max) | peak alloc GiB | max reserved GiB "
             "| reward margin first -> last | trainer | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        tps = (f"{r['tokens_per_s_median']} ({r['tokens_per_s_min']}-{r['tokens_per_s_max']})"
               if r["tokens_per_s_median"] else "-")
        lines.append(f"| {r['provider']} | {r['status']} | {tps} | "
                     f"{r['peak_gpu_mem_allocated_gib']} | {r['max_gpu_mem_reserved_gib']} | "
                     f"{r['first_reward_margin']} -> {r['last_reward_margin']} | "
                     f"{r['trainer_class']} | {r['wall_time_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--data", default=str(ROOT / "trainers/sample_data/preferences.jsonl"))
    parser.add_argument("--steps", type=int, default=23)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--timeout", type=float, default=300, help="seconds per provider run")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test on the demo model")
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.seq, args.batch = WARMUP_STEPS + 3, 128, 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp") / f"mf-dpo-gpu-{int(time.time())}"
    t0 = time.time()
    model = build_model(work / "model", args.tiny)
    build_s = round(time.time() - t0, 1)
    results = []
    for provider in args.providers.split(","):
        results.append(run_provider(provider, model, args, work / "runs"))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "config"})[:800],
              flush=True)
    report = {"command": " ".join([sys.executable] + sys.argv), "cwd": str(Path.cwd()),
              "model": "demo" if args.tiny else "llama-3.2-1b (synthetic weights)",
              "model_build_s": build_s, "environment": environment(),
              "settings": {"seq": args.seq, "max_prompt_length": args.seq // 2,
                           "batch_pairs": args.batch, "steps": args.steps,
                           "warmup_steps": WARMUP_STEPS, "data": args.data},
              "results": results}
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    (args.out / "results.md").write_text(markdown(results, args))
    print(markdown(results, args))
    sys.exit(0 if all(r["status"] == "finished" for r in results) else 1)


if __name__ == "__main__":
    main()
