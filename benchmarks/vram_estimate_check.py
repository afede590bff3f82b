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
    for path in sorted(RESULTS.glob("*/results.json")):
        summary = json.loads(path.read_text())
        if "spec" not in summary or summary.get("representative") is False:
            continue  # not a benchmark engine's result, or measured on a CPU
        spec = summary["spec"]
        for row in summary["table"]:
            if row.get("peak_allocated_gib") is None:
                continue
            points.append({
                "result": path.parent.name, "model": spec["model"],
                "settings": {"provider": row["provider"], "strategy": "sft",
                             "four_bit": row["mode"] == "qlora4", "batch": spec["batch_size"],
                             "seq": spec["max_seq_length"],
                             "checkpointing": spec["gradient_checkpointing"],
                             "dtype_bytes": 2 if spec["precision"] in ("bf16", "fp16") else 4,
                             "lora_r": spec["lora_r"], "targets": spec["target_modules"],
                             "optimizer": spec["optimizer"]},
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
          f"results on the H200. Tolerance {TOLERANCE:.0%} (tests/test_estimate.py).\n")
    print("| result | model | provider | mode | batch x seq | checkpointing | measured GiB | "
          "estimated GiB | error |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["settings"]
        print(f"| {r['result']} | {r['model']} | {s['provider']} | "
              f"{'QLoRA 4-bit' if s['four_bit'] else '16-bit LoRA'} | {s['batch']} x {s['seq']} | "
              f"{'yes' if s['checkpointing'] else 'no'} | {r['measured_gib']:.2f} | "
              f"{r['estimated_gib']:.2f} | {100 * r['error']:+.1f}% |")
    worst = max(abs(r["error"]) for r in rows)
    print(f"\nLargest error {100 * worst:.1f}% over {len(rows)} measurements.")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
