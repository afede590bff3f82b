"""The matched padded Hugging Face run on this call's rows, estimated from the three padded runs
measured on the order before longest_into_warmup (the call had no time left to run it).

    python benchmarks/results/ablation_llama-3.1-8b_lora16_huggingface/padded_on_these_rows.py

It rebuilds both row orders on the CPU (the synthetic model's tokenizer is the bundled demo
tokenizer, so no model is needed), checks the old order against the padded runs' per-step
token counts, fits step seconds = a + b x padded slots (batch x longest row) over their 45
measured steps, and predicts the padded run's tokens/s over this call's measured steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from trainers import data as data_mod  # noqa: E402
from trainers.benchmark import runner  # noqa: E402
from trainers.benchmark.spec import build_spec  # noqa: E402
from trainers.benchmark.variant import step_lengths  # noqa: E402
from trainers.tools.demo import build_tokenizer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PADDED = ["check_plain_llama-3.1-8b_lora16_cudnn_off", "check_plain_llama-3.1-8b_lora16_fresh_caches"]
DATA = ROOT / ".gpu" / "data" / "t0_mix_prompt_completion.jsonl"  # ../shared/data's copy


def row_orders(spec) -> tuple[list, list]:
    """(steps' row lengths before longest_into_warmup, after it)."""
    loaded = data_mod.load_data(str(spec.dataset), column_mapping=spec.column_mapping,
                                strategy="sft")
    rows, _ = data_mod.tokenize_examples(loaded.examples, build_tokenizer(),
                                         spec.max_seq_length, spec.completion_only_loss)
    after, _ = runner.select_rows(rows, spec)
    swap, runner.longest_into_warmup = runner.longest_into_warmup, lambda ordered, _spec: ordered
    try:
        before, _ = runner.select_rows(rows, spec)
    finally:
        runner.longest_into_warmup = swap
    return step_lengths(before, spec.batch_size), step_lengths(after, spec.batch_size)


def main() -> int:
    data = DATA if DATA.is_file() else ROOT.parent / "shared" / "data" / DATA.name
    spec = build_spec({"model": "llama-3.1-8b", "batch_size": 4, "steps": 15, "warmup_steps": 10,
                       "min_example_tokens": 680, "max_seq_length": 2048, "dataset": str(data)})
    before, after = row_orders(spec)
    warm = spec.warmup_steps
    slots, seconds = [], []
    for folder in PADDED:
        summary = json.loads((RESULTS / folder / "results.json").read_text())
        for run in summary["runs"]:
            if run["provider"] != "huggingface" or run["status"] != "ok":
                continue
            assert run["tokens"]["per_step"] == [sum(s) for s in before], "not the same rows"
            for steps, t in zip(before[warm:], run["timing"]["step_times_s"][warm:]):
                slots.append(len(steps) * max(steps))
                seconds.append(t)
            print(f"{folder} {run['name']}: {run['timing']['tokens_per_s_total']:,.0f} tokens/s")
    design = np.vstack([np.ones(len(slots)), slots]).T
    (a, b), *_ = np.linalg.lstsq(design, seconds, rcond=None)
    spread = float(np.std(np.array(seconds) - design @ [a, b]))
    print(f"fit over {len(slots)} measured steps: seconds = {a:.4f} + {b:.3e} x slots "
          f"(residual sd {spread:.3f} s a step)")
    for name, steps in (("before the swap", before), ("this call's order", after)):
        measured = steps[warm:]
        time = sum(a + b * len(s) * max(s) for s in measured)
        print(f"{name}: {sum(map(sum, measured)):,} measured tokens, padded run predicted "
              f"{sum(map(sum, measured)) / time:,.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
