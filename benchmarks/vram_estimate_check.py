"""The VRAM estimate (trainers/estimate.py) against every peak measured on a GPU and committed
under benchmarks/results/: one row per provider x mode x result folder.

    python benchmarks/vram_estimate_check.py > benchmarks/results/vram_estimate.md

Measured = torch.cuda.max_memory_allocated of the run (the largest over its repeats); the
estimate is the same quantity (peak allocated). tests/test_estimate.py holds every row to 15%.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainers.estimate import estimate_shape, model_config, shape_of  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TOLERANCE = 0.15


def measured_points() -> list[dict]:
    """(spec settings, measured peak) of every GPU run in a committed benchmark result."""
    points = []
    for path in sorted(RESULTS.rglob("results.json")):
        summary = json.loads(path.read_text())
        if "spec" not in summary or summary.get("representative") is False:
            continue  # not a benchmark engine's result, or measured on a CPU
        spec = summary["spec"]
        padding_free = spec.get("padding", "padded") in ("padding_free", "best")
        for row in summary["table"]:
            if row.get("peak_allocated_gib") is None:
                continue
            best = (summary.get("best_settings") or {}).get(f"{row['provider']}-{row['mode']}")
            runs = [r for r in summary["runs"] if r["provider"] == row["provider"]
                    and r["mode"] == row["mode"] and r["status"] == "ok"]
            batch, seq = spec["batch_size"], spec["max_seq_length"]
            if padding_free:  # at the tokens of the largest batch these rows made, not the worst
                batch, seq = 1, max(max(r["tokens"]["per_step"]) for r in runs)
            effective = runs[0].get("effective", {})
            points.append({
                "result": str(path.parent.relative_to(RESULTS)), "model": spec["model"],
                "padding_free": padding_free,
                "settings": {"provider": row["provider"], "strategy": "sft",
                             "four_bit": row["mode"] == "qlora4", "batch": batch, "seq": seq,
                             "checkpointing": best["gradient_checkpointing"] if best
                             else spec["gradient_checkpointing"],
                             "dtype_bytes": 2 if spec["precision"] in ("bf16", "fp16") else 4,
                             "lora_r": spec["lora_r"], "targets": spec["target_modules"],
                             "optimizer": spec["optimizer"],
                             "liger": bool(effective.get("use_liger_kernel")),
                             "attention": effective.get("attention") or "sdpa",
                             "padding_free": padding_free,
                             "fused_lora": bool(best and best.get("fused_lora"))},
                "measured_gib": row["peak_allocated_gib"]})
    return points


def compare(point: dict) -> dict:
    shape = shape_of(model_config(point["model"]))
    estimated = estimate_shape(shape, **point["settings"])["peak_allocated_gib"]
    return {**point, "estimated_gib": estimated,
            "error": estimated / point["measured_gib"] - 1}


def main() -> int:
    rows = [compare(p) for p in measured_points()]
    print("# VRAM estimate vs measured peak\n")
    print("`python benchmarks/vram_estimate_check.py`: `trainers/estimate.py` against every peak "
          "(`torch.cuda.max_memory_allocated`, largest over repeats) in the committed benchmark "
          f"results (H200 and H100). Tolerance {TOLERANCE:.0%} (tests/test_estimate.py).\n")
    print("| result | model | provider | mode | batch x seq | checkpointing | measured GiB | "
          "estimated GiB | error |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["settings"]
        print(f"| {r['result']} | {r['model']} | {s['provider']} | "
              f"{'QLoRA 4-bit' if s['four_bit'] else '16-bit LoRA'} | {s['batch']} x {s['seq']} | "
              f"{'yes' if s['checkpointing'] else 'no'} | {r['measured_gib']:.2f} | "
              f"{r['estimated_gib']:.2f} | {100 * r['error']:+.1f}% |")
    for name, kind in (("padded", False), ("padding-free", True)):
        some = [r for r in rows if r["padding_free"] == kind]
        print(f"\nLargest error over the {len(some)} {name} measurements: "
              f"{100 * max(abs(r['error']) for r in some):.1f}%.")
    print("\nPadding-free rows: `batch x seq` = 1 x the tokens of the largest batch these rows "
          "made (what the estimate is asked where the rows are known), with each run's Liger, "
          "attention and fused LoRA settings. HF_SAVED_SHARE, LIGER_SAVED_SHARE and MASK_BYTES "
          "in trainers/estimate.py were fitted on the four 8B Hugging Face points of "
          "ablation_llama-3.1-8b_lora16_huggingface/, FUSED_LORA_SAVED_SHARE on the 8B Hugging "
          "Face point of speed_mode_varlen_h100_2026-12-07/; the 1B and 3B rows were not used "
          "to fit.")
    worst = max(abs(r["error"]) for r in rows)
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
