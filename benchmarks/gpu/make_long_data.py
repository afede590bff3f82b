"""Build the long-sequence SFT data the GPU runs use (real public text, 400-2048+ tokens).

    python benchmarks/gpu/make_long_data.py ../shared/data .gpudata/long_sft.jsonl

T0-mix rows of 2,500-9,000 characters plus the CNN/DailyMail summaries (as prompt/completion),
shuffled with seed 0. With the demo tokenizer they are 400 to 3,400 tokens (median ~1,000),
so at max_seq_length 2048 a batch mixes lengths the way real data does.
"""

import json
import random
import sys
from pathlib import Path

from trainers.data import PROMPT_TEMPLATES


def main(shared: str, out: str) -> None:
    shared_dir = Path(shared)
    rows = []
    for line in (shared_dir / "t0_mix_prompt_completion.jsonl").read_text().split("\n"):
        if not line.strip():
            continue
        r = json.loads(line)
        if 2500 <= len(r["prompt"]) + len(r["completion"]) <= 9000:
            rows.append({"prompt": r["prompt"], "completion": r["completion"]})
    for line in (shared_dir / "cnn_dailymail_tldr_summarization.jsonl").read_text().split("\n"):
        if not line.strip():
            continue
        r = json.loads(line)
        rows.append({"prompt": PROMPT_TEMPLATES["summarization"].format(document=r["document"]),
                     "completion": " " + r["summary"]})
    random.Random(0).shuffle(rows)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} rows -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
