"""Why the engine's Unsloth tokens/s was ~2x a bare script's (issue 13, item 1): one variant per process.

  python benchmarks/gpu/experiments/unsloth_gap.py run VARIANT MODEL_DIR DATA OUT_JSONL
  python benchmarks/gpu/experiments/unsloth_gap.py summary OUT_JSONL          (a markdown table)
  python benchmarks/gpu/experiments/unsloth_gap.py list

Each variant is one LoRA r16 SFT run (all linear layers, bf16, batch 8, max length 2048, padded
batches, gradient checkpointing, adamw_torch_fused) written with the bare libraries only
(transformers + peft + TRL, or Unsloth + TRL; nothing from `trainers`, except the CPU stand-in for
TRL's Triton LM head in a Hugging Face run on a machine without a GPU). The variants differ from
`../shared/reference/bare_sft.py` ("bare") towards `benchmarks/gpu/plain_reference.py` (the
engine's way, "plain") in one factor at a time:

  rows   text    TRL/Unsloth tokenize a "text" (or prompt/completion) column, as Unsloth's docs do
         pretok  the engine's pre-tokenized rows: input_ids + completion_mask (prompt with special
                 tokens, completion without, + EOS), truncated to max length
  order  random  the Trainer's default sampler    | sequential: train_sampling_strategy="sequential"
  tok    unsloth the tokenizer FastLanguageModel returns | auto: AutoTokenizer on the model dir
  script bare    bare_sft.py's model calls and SFTConfig | plain: plain_reference.py's
  loss   full    loss on every token               | completion: loss on completion tokens only
         (the engine's default, completion_only_loss=True)
  ga     None    SFTConfig's default gradient_accumulation_steps (Unsloth's SFTConfig makes it 2,
                 TRL's is 1) | 1: passed explicitly, as the engine and plain_reference.py do

Every variant trains on the same rows (rows of the T0 file with >= MIN_TOKENS tokens, shuffled
with seed 42, as bare_sft.py picks them). What the trainer really got is recorded from its own
collator (each batch's shape, non-padding tokens, loss tokens, keys: so padding-free or packing
would show), and time is read after torch.cuda.synchronize at every optimizer step end; a step's
tokens are those of all its gradient_accumulation_steps micro-batches. Tokens/s = the
non-padding tokens of the measured steps over their time (total), and mean tokens / median step
time (the engine's headline); bare_sft.py's own formula (BATCH rows per step) is computed too. PROFILE=1 profiles two
extra steps after the measured ones (torch.profiler: top kernels, GPU busy share).
Environment: STEPS (default 25, of which WARMUP=3 are left out), BATCH 8, SEQ 2048, MIN_TOKENS 680.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BARE = dict(provider="unsloth", rows="text", order="random", tok="unsloth", script="bare",
            loss="full", ga=None)


def v(**change) -> dict:
    return {**BARE, **change}


# Chain from bare_sft.py (u0) to plain_reference.py (u5), one factor per step, then single-factor
# variants ("star": one change from bare, or one change back from plain) and Hugging Face checks.
VARIANTS = {
    "u0_bare": v(),
    "u0_bare_ga1": v(ga=1),
    "u1_pretok": v(rows="pretok"),
    "u2_pretok_seq": v(rows="pretok", order="sequential"),
    "u3_pretok_seq_autotok": v(rows="pretok", order="sequential", tok="auto"),
    "u4_pretok_seq_autotok_plainargs": v(rows="pretok", order="sequential", tok="auto",
                                         script="plain"),
    "u5_plain": v(rows="pretok", order="sequential", tok="auto", script="plain",
                  loss="completion"),
    "s1_bare_completion": v(loss="completion"),
    "s2_bare_seq": v(order="sequential"),
    "s3_bare_plainargs": v(script="plain", order="sequential", tok="auto"),
    "s4_plain_full": v(rows="pretok", order="sequential", tok="auto", script="plain"),
    "s5_plain_text": v(order="sequential", tok="auto", script="plain", loss="completion"),
    "s6_pretok_completion": v(rows="pretok", loss="completion"),
    "h0_hf_bare": v(provider="huggingface", tok="auto"),
    "h0_hf_bare_ga1": v(provider="huggingface", tok="auto", ga=1),
    "h5_hf_plain": v(provider="huggingface", rows="pretok", order="sequential", tok="auto",
                     script="plain", loss="completion"),
    "h6_hf_bare_completion": v(provider="huggingface", tok="auto", loss="completion"),
}

STEPS = int(os.environ.get("STEPS", "25"))
WARMUP = int(os.environ.get("WARMUP", "3"))
BATCH = int(os.environ.get("BATCH", "8"))
SEQ = int(os.environ.get("SEQ", "2048"))
MIN_TOKENS = int(os.environ.get("MIN_TOKENS", "680"))
PROFILE = os.environ.get("PROFILE", "0") == "1"
PROFILE_STEPS = 2
SEED = 42


def pick_rows(data: str, tok, need: int) -> list[dict]:
    """bare_sft.py's choice: rows with >= MIN_TOKENS tokens (prompt+completion), seed-42 shuffle."""
    rows = [json.loads(line) for line in open(data) if line.strip()]
    cand = [r for r in rows if len(tok(r["prompt"] + r["completion"])["input_ids"]) >= MIN_TOKENS]
    random.Random(SEED).shuffle(cand)
    return (cand * (need // len(cand) + 1))[:need]


def engine_tokenize(row: dict, tok, completion_only: bool) -> dict:
    """trainers.data.tokenize_example + truncation, written out (the engine's pre-tokenized rows)."""
    prompt = tok(row["prompt"], add_special_tokens=True)["input_ids"]
    completion = tok(row["completion"], add_special_tokens=False)["input_ids"]
    if tok.eos_token_id is not None:
        completion = completion + [tok.eos_token_id]
    ids = (prompt + completion)[:SEQ]
    mask = ([0 if completion_only else 1] * len(prompt) + [1] * len(completion))[:SEQ]
    return {"input_ids": ids, "completion_mask": mask}


def dataset_for(spec: dict, picked: list[dict], tok):
    from datasets import Dataset

    if spec["rows"] == "pretok":
        return Dataset.from_list([engine_tokenize(r, tok, spec["loss"] == "completion")
                                  for r in picked])
    if spec["loss"] == "completion":  # TRL's prompt/completion format, as bare_sft.py LOSS=completion
        return Dataset.from_dict({"prompt": [r["prompt"] for r in picked],
                                  "completion": [r["completion"] for r in picked]})
    return Dataset.from_dict({"text": [r["prompt"] + r["completion"] for r in picked]})


def load_model(spec: dict, model_dir: str):
    """(model, tokenizer the loader returned or None), each script's way."""
    import torch

    cuda = torch.cuda.is_available()
    if spec["provider"] == "unsloth":
        from unsloth import FastLanguageModel

        if spec["script"] == "bare":  # bare_sft.py
            model, tok = FastLanguageModel.from_pretrained(
                model_dir, max_seq_length=SEQ, load_in_4bit=False,
                dtype=torch.bfloat16 if cuda else None)
            model = FastLanguageModel.get_peft_model(
                model, r=16, lora_alpha=32, lora_dropout=0, target_modules=LINEAR,
                use_gradient_checkpointing="unsloth", random_state=0)
        else:  # plain_reference.py
            model, tok = FastLanguageModel.from_pretrained(
                model_name=model_dir, max_seq_length=SEQ, dtype=torch.bfloat16,
                load_in_4bit=False, random_state=SEED)
            model = FastLanguageModel.get_peft_model(
                model, r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LINEAR,
                bias="none", random_state=SEED, use_gradient_checkpointing="unsloth",
                max_seq_length=SEQ)
        return model, tok
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    kw = dict(dtype=torch.bfloat16, attn_implementation="sdpa")
    if cuda and spec["script"] == "bare":
        kw["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kw)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0, target_modules=LINEAR,
                      task_type="CAUSAL_LM", **({"bias": "none"} if spec["script"] == "plain" else {}))
    return get_peft_model(model, lora), None


def sft_config(spec: dict, out_dir: str):
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    total = STEPS + (PROFILE_STEPS if PROFILE else 0)
    extra = {}
    if spec["order"] == "sequential":
        extra["train_sampling_strategy"] = "sequential"
    if spec["loss"] == "completion":
        extra["completion_only_loss"] = True
    if not cuda:
        extra["use_cpu"] = True
    if spec["ga"] is not None:
        extra["gradient_accumulation_steps"] = spec["ga"]
    if spec["script"] == "bare":  # bare_sft.py's SFTConfig (PADFREE=0, OPTIM=adamw_torch_fused)
        return SFTConfig(
            output_dir=out_dir, max_steps=total, per_device_train_batch_size=BATCH,
            learning_rate=2e-4, logging_steps=5, report_to=[], max_length=SEQ,
            dataset_text_field="text", bf16=cuda, save_strategy="no", packing=False, seed=0,
            optim="adamw_torch_fused", gradient_checkpointing=True, padding_free=False, **extra)
    return SFTConfig(  # plain_reference.py's sft_config, with the engine spec's values
        output_dir=out_dir, max_steps=total, per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1, learning_rate=2e-4, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch_fused",
        bf16=cuda, gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False}, seed=SEED, data_seed=SEED,
        logging_steps=1, logging_first_step=True, save_strategy="no", report_to="none",
        disable_tqdm=True, include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False, max_length=SEQ, packing=False, padding_free=False,
        dataset_num_proc=None, **{"completion_only_loss": spec["loss"] == "completion", **extra})


class RecordingCollator:
    """Wraps the trainer's collator: what each batch really was, counted before it goes to the GPU."""

    def __init__(self, inner, pad_id):
        self.inner, self.pad_id, self.batches = inner, pad_id, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, examples):
        batch = self.inner(examples)
        ids = batch["input_ids"]
        am = batch.get("attention_mask")
        labels = batch.get("labels")
        real = int(am.sum()) if am is not None else (
            int(ids.numel()) if self.pad_id is None else int((ids != self.pad_id).sum()))
        self.batches.append({
            "shape": list(ids.shape), "keys": sorted(batch.keys()), "tokens": real,
            "padded": int(ids.numel()),
            "loss_tokens": int((labels != -100).sum()) if labels is not None else None,
            "position_ids": "position_ids" in batch,
            "row_lengths": [len(e["input_ids"]) for e in examples if "input_ids" in e],
        })
        return batch


def dynamo_counts() -> dict:
    try:
        from torch._dynamo.utils import counters
        return {"unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
                "frames_ok": int(counters["frames"].get("ok", 0)),
                "recompiles": sum(int(x) for x in counters["recompiles"].values())
                if "recompiles" in counters else None}
    except Exception as exc:  # noqa: BLE001
        return {"error": repr(exc)}


def dynamo_dump() -> dict:
    """All of dynamo's counters at the end, compact (graph-break reasons: the 10 most frequent)."""
    try:
        from torch._dynamo.utils import counters
    except Exception as exc:  # noqa: BLE001
        return {"error": repr(exc)}
    out = {}
    for key, sub in counters.items():
        items = sorted(((int(n), str(k)[:160]) for k, n in sub.items()), reverse=True)
        out[key] = {k: n for n, k in items[:10]} if key in ("graph_break", "recompiles") \
            else {k: n for n, k in items[:12]}
    return out


def block_modes(model) -> dict:
    """Unsloth's per-block compile state of every decoder layer (mode 0 = stock forward)."""
    modes: dict[str, int] = {}
    for m in model.modules():
        if type(m).__name__.endswith("DecoderLayer"):
            key = f"mode={m.__dict__.get('_unsloth_block_mode')},checked={m.__dict__.get('_unsloth_block_checked')}"
            modes[key] = modes.get(key, 0) + 1
    return modes


def make_callbacks(steps_measured: int):
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()

    def now():
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks, self.dynamo, self.reserved, self.logs, self.prof = [], [], [], [], None

        def on_train_begin(self, args, state, control, **kw):
            self.marks = [now()]

        def on_step_begin(self, args, state, control, **kw):
            if PROFILE and cuda and state.global_step == steps_measured:
                self.prof = torch.profiler.profile(activities=[
                    torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
                self.prof.start()
                self.prof_t0 = now()

        def on_step_end(self, args, state, control, **kw):
            self.marks.append(now())
            self.dynamo.append(dynamo_counts())
            if cuda:
                self.reserved.append(round(torch.cuda.memory_reserved() / 2**30, 3))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.logs.append({"step": state.global_step, "loss": float(logs["loss"])})

        def on_train_end(self, args, state, control, **kw):
            if self.prof is not None:
                self.prof_wall = now() - self.prof_t0
                self.prof.stop()

    return Clock()


def profile_summary(prof, wall: float) -> dict:
    import torch

    kernels = []
    for e in prof.key_averages():
        is_cuda = getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0)
        if is_cuda and t:
            kernels.append((t, e.count, e.key))
    kernels.sort(reverse=True)
    busy = sum(k[0] for k in kernels) / 1e6
    cpu_top = sorted(((e.self_cpu_time_total, e.count, e.key) for e in prof.key_averages()
                      if getattr(e, "device_type", None) != torch.autograd.DeviceType.CUDA),
                     reverse=True)[:10]
    return {"steps": PROFILE_STEPS, "wall_s": round(wall, 4), "kernel_time_s": round(busy, 4),
            "gpu_busy_share": round(busy / wall, 3) if wall else None,
            "kernel_launches": sum(k[1] for k in kernels),
            "top_kernels": [{"ms": round(t / 1e3, 2), "count": c, "name": n[:110]}
                            for t, c, n in kernels[:15]],
            "top_cpu_ops": [{"ms": round(t / 1e3, 2), "count": c, "name": n[:80]}
                            for t, c, n in cpu_top]}


def stats(times: list[float], tokens: list[int]) -> dict:
    if not times:
        return {}
    return {"steps": len(times), "total_s": round(sum(times), 4),
            "median_s": round(statistics.median(times), 4),
            "tps_total": round(sum(tokens) / sum(times)),
            "tps_median": round(statistics.fmean(tokens) / statistics.median(times))}


def run(name: str, model_dir: str, data: str, out_jsonl: str) -> int:
    spec = VARIANTS[name]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    if spec["provider"] == "unsloth":
        os.environ["UNSLOTH_DISABLE_AUTO_PADDING_FREE"] = "1"  # padded, as bare PADFREE=0 and the engine
        import unsloth  # noqa: F401 - before transformers / TRL / PEFT
    import torch
    from transformers import AutoTokenizer

    cuda = torch.cuda.is_available()
    auto_tok = AutoTokenizer.from_pretrained(model_dir)
    if auto_tok.pad_token is None:
        auto_tok.pad_token = auto_tok.eos_token
    need = BATCH * (STEPS + 2)
    picked = pick_rows(data, auto_tok, need)
    model, loader_tok = load_model(spec, model_dir)
    tok = loader_tok if spec["tok"] == "unsloth" and loader_tok is not None else auto_tok
    if spec["provider"] == "huggingface" and not cuda:
        sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
        from trainers.train.trl_cpu import use_torch_lm_head_without_gpu  # CPU trial only
        use_torch_lm_head_without_gpu()
    load_s = time.perf_counter() - started
    from trl import SFTTrainer

    ds = dataset_for(spec, picked, tok)
    clock = make_callbacks(STEPS)
    trainer = SFTTrainer(model=model, args=sft_config(spec, f"/tmp/unsloth_gap_out/{name}"),
                         processing_class=tok, train_dataset=ds, callbacks=[clock])
    rec = RecordingCollator(trainer.data_collator, tok.pad_token_id)
    trainer.data_collator = rec
    lens = [len(x) for x in trainer.train_dataset["input_ids"]]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_train = time.perf_counter()
    result = trainer.train()
    train_wall = time.perf_counter() - t_train
    times = [b - a for a, b in zip(clock.marks, clock.marks[1:])][:STEPS]
    # One optimizer step = gradient_accumulation_steps micro-batches: count them all.
    ga = int(trainer.args.gradient_accumulation_steps)
    micro = rec.batches[:len(times) * ga]
    groups = [micro[i * ga:(i + 1) * ga] for i in range(len(times))]
    batches = [b for g in groups for b in g]
    tokens = [sum(b["tokens"] for b in g) for g in groups]
    padded = [sum(b["padded"] for b in g) for g in groups]
    m_times, m_tokens = times[WARMUP:], tokens[WARMUP:]
    bare_formula = None
    if len(clock.marks) > STEPS:  # bare_sft.py: mean dataset row length x batch / mean step time
        per_step = sum(min(n, SEQ) for n in lens) / len(lens) * BATCH
        bare_formula = round(per_step * (STEPS - WARMUP) / (clock.marks[STEPS] - clock.marks[WARMUP]))
    out = {
        "variant": name, **spec, "steps": STEPS, "warmup": WARMUP, "batch": BATCH, "seq": SEQ,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "trainer_class": type(trainer).__name__,
        "collator": type(rec.inner).__name__,
        "collator_padding_free": getattr(rec.inner, "padding_free", None),
        "args_padding_free": getattr(trainer.args, "padding_free", None),
        "args_packing": getattr(trainer.args, "packing", None),
        "gradient_checkpointing_arg": trainer.args.gradient_checkpointing,
        "tokenizer": {"class": type(tok).__name__, "padding_side": tok.padding_side,
                      "pad_token_id": tok.pad_token_id, "same_as_auto": tok is auto_tok},
        "dataset_columns": trainer.train_dataset.column_names,
        "tps_total": round(sum(m_tokens) / sum(m_times)) if m_times else None,
        "tps_median": round(statistics.fmean(m_tokens) / statistics.median(m_times))
        if m_times else None,
        "tps_bare_formula": bare_formula,
        "windows": {"steps_4_15": stats(times[WARMUP:15], tokens[WARMUP:15]),
                    "steps_11_end": stats(times[10:], tokens[10:]),
                    "steps_16_end": stats(times[15:], tokens[15:])},
        "padding_share": round(1 - sum(tokens) / sum(padded), 4) if padded else None,
        "loss_token_share": round(sum(b["loss_tokens"] or 0 for b in batches) / sum(tokens), 4)
        if tokens else None,
        "step_times_s": [round(t, 4) for t in times],
        "step_tokens": tokens, "microbatch_shapes": [b["shape"] for b in batches],
        "microbatch_loss_tokens": [b["loss_tokens"] for b in batches],
        "microbatches_collated": len(rec.batches),
        "gradient_accumulation_steps": ga, "rows_per_step": ga * BATCH,
        "effective_args": {k: getattr(trainer.args, k, None) for k in (
            "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
            "weight_decay", "warmup_steps", "seed", "optim", "lr_scheduler_type",
            "logging_steps", "torch_empty_cache_steps", "dataloader_pin_memory",
            "gradient_checkpointing", "gradient_checkpointing_kwargs", "max_length",
            "padding_free", "packing", "train_sampling_strategy", "completion_only_loss")},
        "batch_keys": batches[0]["keys"] if batches else None,
        "any_position_ids": any(b["position_ids"] for b in batches),
        "first_rows_lengths": batches[0]["row_lengths"] if batches else None,
        "dynamo_per_step": clock.dynamo[:STEPS], "reserved_gib_per_step": clock.reserved[:STEPS],
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3) if cuda else None,
        "first_logged_loss": clock.logs[0] if clock.logs else None,
        "training_loss": round(result.training_loss, 4),
        "load_s": round(load_s, 1), "train_wall_s": round(train_wall, 1),
        "process_s": round(time.perf_counter() - started, 1),
        "unsloth_in_process": "unsloth" in sys.modules,
        "block_compile": block_modes(model), "dynamo": dynamo_dump(),
        "env": {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("UNSLOTH_DISABLE",
                "UNSLOTH_PADDING", "TORCH", "PYTORCH"))},
    }
    if clock.prof is not None:
        out["profile"] = profile_summary(clock.prof, clock.prof_wall)
    if spec["provider"] == "huggingface" and "unsloth" in sys.modules:
        out["error"] = "unsloth imported in a Hugging Face process"
    with open(out_jsonl, "a") as f:
        f.write(json.dumps(out, default=str) + "\n")
    print("RESULT " + json.dumps({k: out[k] for k in (
        "variant", "gradient_accumulation_steps", "tps_total", "tps_median", "tps_bare_formula", "padding_share",
        "loss_token_share", "peak_allocated_gib", "process_s")}), flush=True)
    return 0


def summary(path: str) -> int:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| variant | provider | rows | order | tok | script | loss | grad. accum. (rows/step) | "
          "tokens/s total | tokens/s median-step | bare_sft.py formula | steps 11+ total | "
          "padding | loss tok | peak GiB | first logged loss |")
    print("|" + "---|" * 16)
    for r in rows:
        w = r["windows"]
        fl = r["first_logged_loss"]
        ga = r.get("gradient_accumulation_steps", "?")
        print(f"| {r['variant']} | {r['provider']} | {r['rows']} | {r['order']} | {r['tok']} | "
              f"{r['script']} | {r['loss']} | {ga} ({r.get('rows_per_step', '?')}) | "
              f"{r['tps_total']:,} | {r['tps_median']:,} | "
              f"{r['tps_bare_formula'] or 0:,} | {w['steps_11_end'].get('tps_total', 0):,} | "
              f"{r['padding_share']:.1%} | {r['loss_token_share']:.1%} | "
              f"{r['peak_allocated_gib']} | {round(fl['loss'], 4) if fl else None} "
              f"(step {fl['step'] if fl else None}) |")
    for r in rows:
        if "profile" in r:
            p = r["profile"]
            print(f"\nprofile {r['variant']}: {p['steps']} steps, wall {p['wall_s']} s, kernels "
                  f"{p['kernel_time_s']} s (GPU busy {p['gpu_busy_share']}), "
                  f"{p['kernel_launches']} launches; top: " + "; ".join(
                      f"{k['name'][:50]} {k['ms']} ms x{k['count']}" for k in p["top_kernels"][:6]))
    return 0


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "run" and len(sys.argv) == 6:
        sys.exit(run(*sys.argv[2:]))
    if cmd == "summary" and len(sys.argv) == 3:
        sys.exit(summary(sys.argv[2]))
    if cmd == "list":
        for k, val in VARIANTS.items():
            print(k, val)
        sys.exit(0)
    print(__doc__, file=sys.stderr)
    sys.exit(2)
