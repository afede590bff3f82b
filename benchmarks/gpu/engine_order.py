"""Write a data file's rows in the order the benchmark engine trains them.

    python benchmarks/gpu/engine_order.py DATA OUT.jsonl --batch 4 --steps 20 --warmup 10 \
        --min-tokens 0 [--seq 2048] [--seed 42]

The engine (`trainers.benchmark.runner`) tokenizes DATA, keeps the rows long enough, shuffles
them with the seed, takes (warmup + steps) x batch of them and swaps the longest into the last
warm-up batch; its trainer then reads them in that order. OUT holds those rows, one per line as
DATA had them, so a training run that reads OUT in order (train_gpu.py --in-order) trains the
same rows in the same steps: the engine's "each at its best" and `modelforge train` compare
step for step. The arguments are run_benchmarks.sh's BATCH, STEPS, WARMUP, MIN_TOKENS, SEQ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def engine_order(data: str, batch: int, steps: int, warmup: int, min_tokens: int, seq: int,
                 seed: int) -> list[dict]:
    from trainers import data as data_mod
    from trainers.benchmark.runner import select_rows
    from trainers.benchmark.spec import BenchmarkSpec
    from trainers.tools.demo import build_tokenizer

    # the rows do not depend on the model: any synthetic shape makes a valid spec
    spec = BenchmarkSpec(model="llama-3.2-1b", synthetic_weights=True, dataset=data,
                         batch_size=batch, steps=steps, warmup_steps=warmup,
                         min_example_tokens=min_tokens, max_seq_length=seq, seed=seed)
    raw, _ = data_mod.read_rows(data)
    loaded = data_mod.load_data(data, column_mapping=spec.column_mapping, strategy="sft")
    if len(loaded.examples) != len(raw):
        sys.exit(f"{data}: {len(raw)} rows read but {len(loaded.examples)} examples made")
    # the synthetic models carry the bundled demo tokenizer (trainers/benchmark/synthetic.py)
    rows, _ = data_mod.tokenize_examples(loaded.examples, build_tokenizer(), seq,
                                         spec.completion_only_loss)
    for index, row in enumerate(rows):
        row["source_index"] = index
    ordered, _ = select_rows(rows, spec)
    return [raw[row["source_index"]] for row in ordered]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True, help="measured steps")
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--min-tokens", type=int, required=True)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rows = engine_order(args.data, args.batch, args.steps, args.warmup, args.min_tokens,
                        args.seq, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} rows in the engine's order -> {args.out}")


if __name__ == "__main__":
    main()
