"""One Markdown summary of several benchmark result folders (each from run_benchmarks.sh).

  python benchmarks/gpu/collect.py DIR [DIR ...] > SUMMARY.md

Each DIR holds results.json (and plain_reference.json when the plain script ran). The summary
has one table over all of them, the engine-vs-plain comparison, the environment and the
commands; the numbers are copied from the JSON, nothing is recomputed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainers.benchmark.report import MODE_LABELS, fmt

HEADER = ["model", "provider", "mode", "tokens/s (range over repeats)", "speedup vs HF",
          "peak VRAM GiB", "VRAM saved vs HF", "MFU", "median step s", "first-step loss",
          "matching"]


def row_cells(model: str, row: dict) -> list[str]:
    if row["status"] == "failed":
        return [model, row["provider"], MODE_LABELS.get(row["mode"], row["mode"]),
                f"FAILED: {(row.get('reason') or '')[:120]}"] + ["-"] * 6 + [row["matched"]]
    spread = f" ({row['tokens_per_s_low']:,.0f}-{row['tokens_per_s_high']:,.0f})" \
        if row["runs_ok"] > 1 else ""
    return [model, row["provider"], MODE_LABELS.get(row["mode"], row["mode"]),
            f"{row['tokens_per_s']:,.0f}{spread}", fmt(row.get("speedup"), "{:.2f}x"),
            fmt(row.get("peak_allocated_gib"), "{:.2f}"),
            fmt(row.get("vram_reduction_pct"), "{:.1f}%"),
            fmt(None if row.get("mfu") is None else 100 * row["mfu"], "{:.1f}%"),
            fmt(row.get("median_step_s"), "{:.3f}"), fmt(row.get("first_step_loss"), "{:.4f}"),
            row["matched"]]


def plain_lines(folder: Path) -> list[str]:
    path = folder / "plain_reference.json"
    if not path.is_file():
        return []
    lines = []
    for item in json.loads(path.read_text()):
        engine = item.get("engine") or {}
        lines.append(f"- {folder.name}: {item['provider']} {item['mode']}: plain script "
                     f"{item['plain_tokens_per_s']:,.0f} tokens/s, engine "
                     f"{fmt(engine.get('tokens_per_s'), '{:,.0f}')} tokens/s (runs "
                     f"{', '.join(f'{v:,.0f}' for v in engine.get('runs', []))}): engine "
                     f"{fmt(item.get('engine_vs_plain_pct'), '{:+.2f}%')} vs plain")
    return lines


def summary(folders: list[Path]) -> str:
    results = [(f, json.loads((f / "results.json").read_text())) for f in folders]
    first = results[0][1]
    env, spec = first["environment"], first["spec"]
    device = env.get("device") or {}
    gpu = env["gpus"][0] if env.get("gpus") else {}
    rows = []
    for _, r in results:
        model = r["spec"]["model"] + (" (synthetic weights)" if r.get("synthetic_weights") else "")
        rows += [row_cells(model, row) for row in r["table"]]
    lines = [f"# GPU benchmark: Hugging Face vs Unsloth ({first['generated_at']})", "",
             f"GPU: {device.get('device_name') or gpu.get('name')}, driver "
             f"{gpu.get('driver_version')}, CUDA {env.get('torch_cuda')}; versions: "
             + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v), "",
             f"Set-up: seq {spec['max_seq_length']}, batch {spec['batch_size']}, "
             f"{spec['warmup_steps']} warm-up + {spec['steps']} measured steps, {spec['repeats']} "
             f"runs per configuration, padding {spec['padding']}, LoRA r {spec['lora_r']} alpha "
             f"{spec['lora_alpha']} on {spec['target_modules']}, optimizer {spec['optimizer']}, "
             f"gradient checkpointing {spec['gradient_checkpointing']}, data "
             f"{Path(spec['dataset']).name} (rows of at least {spec['min_example_tokens']} tokens, "
             f"{first['data']['token_stats']})", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    if any(r.get("synthetic_weights") for _, r in results):
        lines += ["", "Synthetic weights: random-init models with the published shapes; speed "
                      "and memory are real, the loss values are not a trained model's."]
    lines.append("")
    plain = [line for f, _ in results for line in plain_lines(f)]
    if plain:
        lines += ["## Engine overhead (plain script, same library calls, same rows)", ""] + plain
    lines += ["", "## Matching", ""]
    for folder, r in results:
        for mode, m in r["matching"].items():
            failed = [c["check"] for c in m["checks"] if c["required"] and not c["ok"]]
            loss = next((c["detail"] for c in m["checks"] if c["check"] == "first-step loss"), "")
            lines.append(f"- {folder.name} {mode}: {m['verdict']}"
                         + (f" (failed: {', '.join(failed)})" if failed else "")
                         + (f"; {loss}" if loss else ""))
    lines += ["", "## Commands", ""]
    for folder, r in results:
        lines.append(f"- {folder.name}: `{r['spec'].get('invocation')}` -> `{r['command']}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(summary([Path(a) for a in argv]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
