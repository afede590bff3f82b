"""GPU evidence for the providers: real `trainers.train.worker` runs of a synthetic-weights model.

Each variant is one ordinary ModelForge training run (its own worker process, its own events),
so what this measures is what a user's run does. For the matched, instrumented comparison see
trainers/benchmark (modelforge bench); this script shows the product's own training path.

    python benchmarks/gpu/train_gpu.py --family llama-3.2-1b --data .gpudata/long_sft.jsonl \
        --steps 33 --out $OUT/train_1b
    python benchmarks/gpu/train_gpu.py --tiny --out /tmp/gpu-smoke     # CPU smoke test of the script

Per variant: steady-state tokens/s (median of the progress events after 3 warm-up steps;
non-padding tokens), peak VRAM (torch max allocated, from the finished event, and max reserved
seen in progress events), first and last loss, wall time, and the started event's record of what
ran (Unsloth's patch evidence included).
"""

from __future__ import annotations

import argparse
import json
import os
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
from trainers.runs.process import LOG_FILE, child_env, create_run_dir, launch  # noqa: E402

ABLATION = Path(__file__).resolve().parent / "experiments" / "speed_ablation.py"

VARIANTS = {  # name -> config fields
    "huggingface-lora16": {"provider": "huggingface", "use_4bit": False},
    "unsloth-lora16": {"provider": "unsloth", "use_4bit": False},
    "huggingface-qlora4": {"provider": "huggingface", "use_4bit": True},
    "unsloth-qlora4": {"provider": "unsloth", "use_4bit": True},
}


def build_model(family: str, out: Path, tiny: bool) -> Path:
    if tiny:
        from trainers.tools.demo import build_demo_model

        return build_demo_model(out)
    subprocess.run([sys.executable, "-m", "trainers.benchmark.synthetic", family, str(out)],
                   check=True, cwd=ROOT)
    return out


def start(run_dir: Path, technique: str, in_order: bool):
    """The product's worker; with a technique, a profiled step (PROFILE_STEP) or the rows in
    order (ROWS_IN_ORDER), the same worker through speed_ablation.py."""
    if technique == "none" and not os.environ.get("PROFILE_STEP") and not in_order:
        return launch(run_dir)
    with open(run_dir / LOG_FILE, "ab") as log:
        return subprocess.Popen([sys.executable, str(ABLATION), technique, str(run_dir)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=str(run_dir),
                                env=child_env({"PYTHONUNBUFFERED": "1",
                                               "TOKENIZERS_PARALLELISM": "false",
                                               **({"ROWS_IN_ORDER": "1"} if in_order else {})}))


def run_variant(name: str, fields: dict, model: Path, args, runs_dir: Path,
                technique: str = "none") -> dict:
    config = {"model_name": str(model), "dataset": str(Path(args.data).resolve()),
              "max_seq_length": args.seq, "per_device_train_batch_size": args.batch,
              "max_steps": args.steps, "learning_rate": 2e-4, "lora_r": 16, "lora_alpha": 16,
              "lora_dropout": 0.0, "target_modules": "auto", "bf16": not args.tiny,
              "gradient_checkpointing": True, "logging_steps": 1, "seed": 0,
              "name": name, **fields}
    if args.tiny:
        config["use_4bit"] = False
    cfg = build_config(config)
    run_dir = create_run_dir(cfg, runs_dir, name)
    t0 = time.time()
    proc = start(run_dir, technique, args.in_order)
    proc.wait()
    wall = time.time() - t0
    result = summarize(name, run_dir, proc.returncode, wall)
    # the log says which kernels ran (and a failed run's traceback)
    shutil.copy(run_dir / LOG_FILE, Path(args.out) / f"{name}.train.log")
    for profile in run_dir.glob("profile-step*.txt"):
        shutil.copy(profile, Path(args.out) / f"{name}.{profile.name}")
    applied = run_dir / "technique.json"
    result["technique"] = {"name": technique,
                           "applied": json.loads(applied.read_text()) if applied.exists() else None}
    return result


def summarize(name: str, run_dir: Path, returncode: int, wall: float) -> dict:
    return {"variant": name, **summarize_run(run_dir, returncode, wall)}


def markdown(results: list[dict], args) -> str:
    lines = [f"Synthetic weights ({args.family}), seq {args.seq}, batch {args.batch} per GPU, "
             f"{args.steps} steps ({WARMUP_STEPS} warm-up), LoRA r16 all linear, "
             + ("speed_mode (it decides padding-free, checkpointing, micro-batch, Liger)"
                if args.speed else "gradient checkpointing")
             + ", through `python -m trainers.train.worker`.", "",
             "| variant | status | tokens/s (median, min-max) | MFU (median) | micro-batch x "
             "accumulation | peak alloc GiB per GPU | max reserved GiB | first loss | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        tps = (f"{r['tokens_per_s_median']} ({r['tokens_per_s_min']}-{r['tokens_per_s_max']})"
               if r["tokens_per_s_median"] else "-")
        mfu = f"{r['mfu_median']:.1%}" if r.get("mfu_median") else "-"
        micro = " x ".join(str(x) for x in r["micro_batch"]) if r.get("micro_batch") else "-"
        lines.append(f"| {r['variant']} | {r['status']} | {tps} | {mfu} | {micro} | "
                     f"{r['peak_gpu_mem_allocated_gib_per_rank'] or r['peak_gpu_mem_allocated_gib']}"
                     f" | {r['max_gpu_mem_reserved_gib']} | "
                     f"{r['first_loss']} | {r['wall_time_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", default="llama-3.2-1b")
    parser.add_argument("--data", default=str(ROOT / "trainers/sample_data/instructions.jsonl"))
    parser.add_argument("--steps", type=int, default=33)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated; a huggingface variant may add speed_ablation.py's "
                             "techniques: huggingface-lora16+peft_lora+fp8_frozen")
    parser.add_argument("--processes", default="1",
                        help="comma-separated process (GPU) counts to run each variant with")
    parser.add_argument("--out", required=True)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test on the demo model")
    parser.add_argument("--in-order", action="store_true",
                        help="train the data's rows in the file's order (a sequential sampler, "
                             "as the benchmark engine's), e.g. a file from engine_order.py")
    parser.add_argument("--speed", action="store_true",
                        help="speed_mode: true (trainers/speed.py decides at the worker's start)")
    args = parser.parse_args()
    if args.tiny:
        args.family, args.steps, args.seq, args.batch = "demo", 5, 128, 2
    for variant in args.variants.split(","):
        name, _, technique = variant.partition("+")
        if name not in VARIANTS or (technique and VARIANTS[name]["provider"] != "huggingface"):
            parser.error(f"{variant}: one of {list(VARIANTS)}; techniques (+...) act on the "
                         "Hugging Face provider's model")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mf-gpu-{int(time.time())}"
    model = build_model(args.family, work / "model", args.tiny)
    try:
        results = run_all(args, model, work, out)
    finally:  # an 8B shape is 16 GB: a few calls' copies fill the GPU machine's disk
        shutil.rmtree(work / "model", ignore_errors=True)
    print(markdown(results, args))


def run_all(args, model: Path, work: Path, out: Path) -> list[dict]:
    results = []
    for variant in args.variants.split(","):
        name, _, technique = variant.partition("+")
        for processes in [int(p) for p in args.processes.split(",")]:
            label = (name if processes == 1 else f"{name}-x{processes}") + \
                (f"+{technique}" if technique else "")
            fields = {**VARIANTS[name], "num_processes": processes,
                      **({"speed_mode": True} if args.speed else {})}
            results.append(run_variant(label, fields, model, args, work / "runs",
                                       technique or "none"))
            print(json.dumps(results[-1])[:600], flush=True)
            write_report(results, args, out)
    return results


def write_report(results: list[dict], args, out: Path) -> None:
    """After every run, so a call cut short keeps the runs it finished."""
    report = {"command": " ".join([sys.executable] + sys.argv), "family": args.family,
              "synthetic_weights": not args.tiny, "environment": environment(),
              "settings": {"seq": args.seq, "batch": args.batch, "steps": args.steps,
                           "warmup_steps": WARMUP_STEPS, "speed_mode": args.speed,
                           "rows_in_order": args.in_order}, "results": results}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(markdown(results, args))


if __name__ == "__main__":
    main()
