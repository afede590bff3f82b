"""ONE measured run, in its own fresh process:

  python -m trainers.benchmark.variant RUN_DIR PROVIDER MODE REPEAT

Reads RUN_DIR/config.json (the BenchmarkSpec) and RUN_DIR/prepared.json (the model directory and
the tokenized rows, in training order, that every variant trains on), trains with the project's
own provider and TRL's SFTTrainer, and writes RUN_DIR/variants/NAME/result.json. Progress goes
to RUN_DIR/events.jsonl as `progress` events carrying the variant's name.

The model is prepared by the training worker's own code (trainers/train/prepare.py): the
provider's `check` comes first, and for unsloth it imports unsloth before transformers, TRL or
PEFT load; a huggingface variant never imports unsloth (checked).

Timing: a callback reads a synchronised clock (torch.cuda.synchronize, then perf_counter) when
training begins and at the end of every optimizer step, so a step's time is the whole loop
period (data, forward, backward, optimizer, logging). Warm-up steps are left out.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

PROCESS_START = time.perf_counter()

from trainers.benchmark.spec import PADDING_FREE, BenchmarkSpec  # noqa: E402 - pydantic only
from trainers.config import TrainConfig  # noqa: E402
from trainers.events import EventWriter  # noqa: E402

PREPARED_FILE = "prepared.json"
VARIANTS_DIR = "variants"
RESULT_FILE = "result.json"


def variant_name(provider: str, mode: str, repeat: int) -> str:
    return f"{provider}-{mode}-r{repeat}"


def step_lengths(rows: list[dict], batch_size: int) -> list[list[int]]:
    """The row lengths of each step, as the sequential sampler feeds them."""
    lengths = [len(r["input_ids"]) for r in rows]
    return [lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size)]


def train_config(spec: BenchmarkSpec, model_dir: str, provider: str, mode: str,
                 best: dict | None = None) -> TrainConfig:
    """The training config every variant of this spec shares, but for provider and mode (and,
    for padding "best", the runner's per-provider decisions: checkpointing, attention, Liger,
    fused LoRA layers)."""
    checkpointing = best["gradient_checkpointing"] if best else spec.gradient_checkpointing
    # the spec's attention and Liger are for Hugging Face (Unsloth has its own); padding_free is
    # what sft_arguments sets, stated here too because per-row attention requires it
    huggingface = provider == "huggingface"
    attention = best.get("attention", spec.attention) if best else spec.attention
    return TrainConfig(
        attention=attention if huggingface else "sdpa",
        liger_kernel=huggingface and (best["liger_kernel"] if best else spec.liger_kernel),
        fused_lora=huggingface and bool(best and best.get("fused_lora")),
        padding_free=huggingface and spec.padding in PADDING_FREE,
        provider=provider, model_name=model_dir, max_seq_length=spec.max_seq_length,
        strategy="qlora" if mode == "qlora4" else "sft", use_4bit=mode == "qlora4",
        dataset=spec.dataset, completion_only_loss=spec.completion_only_loss,
        lora_r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=0.0,
        target_modules=spec.target_modules, max_steps=spec.total_steps,
        per_device_train_batch_size=spec.batch_size, gradient_accumulation_steps=1,
        learning_rate=spec.learning_rate, lr_scheduler_type="constant", optim=spec.optimizer,
        bf16=spec.precision == "bf16", fp16=spec.precision == "fp16",
        gradient_checkpointing=checkpointing, seed=spec.seed, logging_steps=1)


def sft_arguments(spec: BenchmarkSpec, cfg: TrainConfig, output_dir: str,
                  best: dict | None = None) -> dict:
    """SFTConfig keyword arguments: the worker's, plus sequential order and the padding choice."""
    from trainers.train.strategies.common import common_training_args

    args = common_training_args(cfg, output_dir, has_eval=False)
    args.update(max_length=spec.max_seq_length, packing=False, dataset_num_proc=None,
                completion_only_loss=spec.completion_only_loss,
                train_sampling_strategy="sequential", save_strategy="no")
    if spec.padding == "padded":
        args["padding_free"] = False
    elif spec.padding in PADDING_FREE:
        args.update(padding_free=True, max_length=None)  # rows are already truncated
    if cfg.liger_kernel:
        args["use_liger_kernel"] = True
    if spec.torch_compile and cfg.provider == "huggingface":
        args["torch_compile"] = True
    return args  # as_shipped: padding_free left to each library's default


def load_tokenizer(path: str):
    from trainers.train.providers.base import load_tokenizer

    return load_tokenizer(path)


class _Clock:
    """perf_counter after the device has finished its queued work."""

    def __init__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        self._sync = torch.cuda.synchronize

    def now(self) -> float:
        if self.cuda:
            self._sync()
        return time.perf_counter()


def device_memory_used() -> tuple[int | None, str | None]:
    """The device's own view of used memory (NVML), or None and the reason."""
    import torch

    if not torch.cuda.is_available():
        return None, "no CUDA device"
    try:
        return int(torch.cuda.device_memory_used()), None
    except Exception as exc:  # noqa: BLE001 - recorded as the reason it is missing
        return None, f"NVML not available: {type(exc).__name__}: {exc}"


PROFILE_STEPS_ENV = "MODELFORGE_PROFILE_STEPS"  # e.g. "2,4": torch profiler tables of those steps
# (a profiled step's time includes the profiler and its export: profile warm-up steps)


class _StepProfiler:
    """torch.profiler around chosen steps (MODELFORGE_PROFILE_STEPS), written as tables of the
    ops by host time and by device time to OUT/profile-stepN.txt: where a slow step went."""

    def __init__(self, out_dir: Path):
        wanted = os.environ.get(PROFILE_STEPS_ENV, "")
        self.steps = {int(x) for x in wanted.split(",") if x.strip().isdigit()}
        self.out_dir = out_dir
        self.active = None

    def begin(self, step: int):
        if step not in self.steps:
            return
        import torch

        kinds = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            kinds.append(torch.profiler.ProfilerActivity.CUDA)
        self.active = torch.profiler.profile(activities=kinds)
        self.active.__enter__()

    def end(self, step: int):
        if self.active is None:
            return
        self.active.__exit__(None, None, None)
        table = self.active.key_averages()
        device_key = "self_cuda_time_total" if "CUDA" in str(self.active.activities) else \
            "self_cpu_time_total"
        text = (f"step {step}: ops by host (self CPU) time\n"
                + table.table(sort_by="self_cpu_time_total", row_limit=40)
                + f"\nstep {step}: ops by device time\n"
                + table.table(sort_by=device_key, row_limit=25))
        (self.out_dir / f"profile-step{step}.txt").write_text(text)
        self.active = None


def make_step_timer(events: EventWriter, name: str, total_steps: int, out_dir: Path):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Synchronised step marks, token counts, the loss of every step, NVML samples."""

        def __init__(self):
            from trainers.benchmark.step_costs import StepCosts

            self.clock = _Clock()
            self.costs = StepCosts()
            self.marks: list[float] = []
            self.tokens_seen: list[int] = []
            self.losses: dict[int, float] = {}
            self.nvml_peak: int | None = None
            self.nvml_reason: str | None = None
            self.profiler = _StepProfiler(out_dir)

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks = [self.clock.now()]
            self.costs.train_began(self.marks[0])

        def on_step_begin(self, args, state, control, **kwargs):
            self.costs.step_began()
            self.profiler.begin(state.global_step + 1)

        def on_step_end(self, args, state, control, **kwargs):
            # the profiler's table export (~13 s on an 8B step) counts in the profiled step,
            # not in the next one: profile a warm-up step
            self.profiler.end(state.global_step)
            self.costs.host_done()
            self.marks.append(self.clock.now())
            self.costs.step_ended(self.marks[-1])
            self.tokens_seen.append(int(state.num_input_tokens_seen or 0))
            if state.global_step % 10 == 0:  # NVML is slow-ish: every 10th step, and at the end
                self.sample_nvml()

        def on_train_end(self, args, state, control, **kwargs):
            self.sample_nvml()
            self.costs.close()

        def sample_nvml(self):
            used, self.nvml_reason = device_memory_used()
            if used is not None:
                self.nvml_peak = max(self.nvml_peak or 0, used)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses[state.global_step] = float(logs["loss"])
                step_s = self.marks[-1] - self.marks[-2] if len(self.marks) > 1 else None
                events.emit("progress", variant=name, step=state.global_step,
                            total_steps=total_steps, loss=float(logs["loss"]),
                            step_time_s=round(step_s, 4) if step_s else None)

    return StepTimer()


def effective_settings(trainer) -> dict:
    """What the trainer really uses, after each library applied its own defaults."""
    args = trainer.args
    collator = trainer.data_collator
    return {
        "attention": getattr(trainer.model.config, "_attn_implementation", None),
        "trainer_class": f"{type(trainer).__module__}.{type(trainer).__qualname__}",
        "padding_free": bool(getattr(args, "padding_free", False)),
        "collator": type(collator).__name__,
        "collator_padding_free": getattr(collator, "padding_free", None),
        "optim": getattr(args.optim, "value", str(args.optim)),
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": getattr(args.lr_scheduler_type, "value", str(args.lr_scheduler_type)),
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "gradient_checkpointing_args": bool(args.gradient_checkpointing),
        "train_sampling_strategy": getattr(args, "train_sampling_strategy", None),
        "max_length": getattr(args, "max_length", None),
        "bf16": bool(args.bf16), "fp16": bool(args.fp16), "use_cpu": bool(args.use_cpu),
        "use_liger_kernel": bool(getattr(args, "use_liger_kernel", False)),
        "cudnn_sdp_enabled": _cudnn_sdp_enabled(),
    }


def _cudnn_sdp_enabled() -> bool:
    import torch

    return bool(torch.backends.cuda.cudnn_sdp_enabled())


def first_batch_facts(trainer, rows: list[dict], batch_size: int) -> dict:
    """The first batch as the trainer's own dataloader builds it: its shape and loss tokens."""
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch.get("labels")
    return {"keys": sorted(batch.keys()), "input_ids_shape": list(batch["input_ids"].shape),
            "loss_tokens": int((labels != -100).sum()) if labels is not None else None,
            "expected_loss_tokens": sum(sum(r["completion_mask"]) for r in rows[:batch_size])}


def steady_state(marks: list[float], lengths: list[list[int]], warmup: int) -> dict:
    """Median step time after the warm-up; tokens/s = mean tokens per step / median step time."""
    times = [b - a for a, b in zip(marks, marks[1:])]
    measured = times[warmup:]
    if not measured:
        raise RuntimeError(f"training ran {len(times)} steps, none after the {warmup} warm-up "
                           "steps: nothing to measure")
    tokens = [sum(x) for x in lengths[warmup:len(times)]]
    median = statistics.median(measured)
    mean_tokens = statistics.fmean(tokens)
    return {
        "step_times_s": [round(t, 5) for t in times],
        "measured_steps": len(measured),
        "median_step_s": median, "min_step_s": min(measured), "max_step_s": max(measured),
        "measured_time_s": sum(measured), "measured_tokens": sum(tokens),
        "tokens_per_s": mean_tokens / median,
        "tokens_per_s_min": mean_tokens / max(measured),
        "tokens_per_s_max": mean_tokens / min(measured),
        "tokens_per_s_total": sum(tokens) / sum(measured),
    }


def memory_peaks(timer) -> dict:
    import torch

    gib = 2 ** 30
    if not torch.cuda.is_available():
        return {"max_allocated_gib": None, "max_reserved_gib": None, "nvml_peak_used_gib": None,
                "nvml_note": "no CUDA device"}
    return {
        "max_allocated_gib": torch.cuda.max_memory_allocated() / gib,
        "max_reserved_gib": torch.cuda.max_memory_reserved() / gib,
        "nvml_peak_used_gib": timer.nvml_peak / gib if timer.nvml_peak is not None else None,
        "nvml_note": timer.nvml_reason or "device-wide used memory, sampled every 10th step and "
                                          "at the end (PyTorch keeps its reserved peak cached; "
                                          "includes the CUDA context and other processes)",
    }


def flops_summary(model, lengths: list[list[int]], speed: dict, warmup: int,
                  device_name: str | None, peak_override: float | None) -> dict:
    from trainers import flops

    macs = flops.linear_macs(model)
    layers, width = flops.attention_width(model.config)
    per_step = [flops.step_flops(x, macs, layers, width) for x in lengths]
    measured = per_step[warmup:warmup + speed["measured_steps"]]
    per_token = sum(measured) / speed["measured_tokens"]
    # the spec's peak, else what a training run counts against (MODELFORGE_PEAK_TFLOPS, the table)
    found = {"peak_tflops": peak_override, "peak_source": "spec.peak_tflops"} if peak_override \
        else flops.run_peak(device_name)
    peak = found["peak_tflops"]
    value = flops.mfu(per_token * speed["tokens_per_s_total"], peak)  # at the headline speed
    return {"formula": flops.FORMULA, "linear_macs_per_token": macs,
            "attention_layers": layers, "attention_width": width,
            "model_flops_per_token": per_token, "peak_tflops": peak,
            "peak_source": found["peak_source"] or found["mfu_unavailable"], "mfu": value}


def load(cfg: TrainConfig, prepared: dict) -> dict:
    """A training run's preparation, with the tokenizer the rows were made with."""
    from trainers.train.prepare import prepare

    ready = prepare(cfg, tokenizer_from=prepared["tokenizer_dir"])
    return {"provider": ready.provider, "tokenizer": ready.tokenizer, "model": ready.model,
            "load_s": ready.model_load_s, "lm_head_replaced": "trl_lm_head" in ready.fixes}


def build_trainer(spec: BenchmarkSpec, cfg: TrainConfig, loaded: dict, rows: list[dict],
                  timer, output_dir: Path, best: dict | None = None):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = sft_arguments(spec, cfg, str(output_dir), best)
    if args.get("torch_compile"):
        from trainers.train.trl_cpu import keep_lm_head_out_of_compile

        keep_lm_head_out_of_compile()
    return SFTTrainer(model=loaded["model"], args=SFTConfig(**args),
                      processing_class=loaded["tokenizer"], train_dataset=Dataset.from_list(rows),
                      callbacks=[timer])


def measure(run_dir: Path, spec: BenchmarkSpec, prepared: dict, cfg: TrainConfig, mode: str,
            repeat: int, events: EventWriter, best: dict | None = None) -> dict:
    import torch

    name = variant_name(cfg.provider, mode, repeat)
    torch.backends.cuda.enable_cudnn_sdp(spec.cudnn_attention)  # spec.cudnn_attention says why
    loaded = load(cfg, prepared)
    rows = prepared["rows"]
    timer = make_step_timer(events, name, spec.total_steps, run_dir / VARIANTS_DIR / name)
    output_dir = run_dir / VARIANTS_DIR / name / "trainer"
    trainer = build_trainer(spec, cfg, loaded, rows, timer, output_dir, best)
    effective = effective_settings(trainer)
    if effective["gradient_accumulation_steps"] != 1:
        # tokens/s counts one batch per optimizer step (step_lengths); importing unsloth makes
        # SFTConfig's default 2, which would train twice the rows counted (docs/benchmarking.md)
        raise RuntimeError(f"the trainer accumulates {effective['gradient_accumulation_steps']} "
                           "batches per step; the benchmark measures one batch per step")
    first_batch = first_batch_facts(trainer, rows, spec.batch_size)
    started = time.perf_counter()
    trainer.train()
    train_wall_s = time.perf_counter() - started
    if cfg.provider == "huggingface" and "unsloth" in sys.modules:
        raise RuntimeError("unsloth was imported in the huggingface variant's process, so it "
                           "is not a stock Hugging Face baseline; report this as a bug")
    result = summarise(spec, loaded, timer, step_lengths(rows, spec.batch_size))
    result["timing"]["train_wall_s"] = train_wall_s
    return {"name": name, "provider": cfg.provider, "mode": mode, "repeat": repeat,
            "status": "ok", "pid": os.getpid(), **result, "effective": effective,
            "first_batch": first_batch, **({"best": best} if best else {})}


def summarise(spec: BenchmarkSpec, loaded: dict, timer, lengths: list[list[int]]) -> dict:
    """Speed, tokens, losses, memory, FLOPs and provenance of a finished training."""
    import torch

    from trainers.train.providers.base import device_facts, library_versions

    speed = steady_state(timer.marks, lengths, spec.warmup_steps)
    trained = len(timer.marks) - 1
    device = device_facts()
    trainer_tokens = [b - a for a, b in zip([0] + timer.tokens_seen, timer.tokens_seen)]
    return {
        "timing": {"load_s": loaded["load_s"],
                   "in_process_s": time.perf_counter() - PROCESS_START,
                   "steps_run": trained, "warmup_steps": spec.warmup_steps, **speed},
        "samples_per_s": spec.batch_size / speed["median_step_s"],
        "tokens": {"per_step": [sum(x) for x in lengths[:trained]],
                   "trainer_per_step": trainer_tokens, "rows_per_step": spec.batch_size},
        "loss": {"first_step": timer.losses.get(1),
                 "curve": [timer.losses.get(s) for s in range(1, trained + 1)]},
        "memory": memory_peaks(timer),
        "step_costs": timer.costs.summary(spec.warmup_steps),
        "flops": flops_summary(loaded["model"], lengths, speed, spec.warmup_steps,
                               device.get("device_name"), spec.peak_tflops),
        "provider_info": loaded["provider"].info,
        "unsloth_in_process": "unsloth" in sys.modules,
        "trl_lm_head_replaced": loaded["lm_head_replaced"],
        "device": device, "versions": library_versions(), "torch_cuda": torch.version.cuda,
        "env": {k: v for k, v in os.environ.items() if k.startswith("UNSLOTH_")},
    }


def run(run_dir: Path, provider: str, mode: str, repeat: int) -> int:
    name = variant_name(provider, mode, repeat)
    out = run_dir / VARIANTS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    events = EventWriter(run_dir)
    cfg = None
    try:
        spec = BenchmarkSpec(**json.loads((run_dir / "config.json").read_text()))
        prepared = json.loads((run_dir / PREPARED_FILE).read_text())
        best = prepared.get("best_settings", {}).get(f"{provider}-{mode}")
        cfg = train_config(spec, prepared["model_dir"], provider, mode, best)
        result = measure(run_dir, spec, prepared, cfg, mode, repeat, events, best)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the variant's result
        traceback.print_exc()
        from trainers.diagnostics import diagnose_exception

        result = {"name": name, "provider": provider, "mode": mode, "repeat": repeat,
                  "status": "failed", **diagnose_exception(exc, cfg),
                  "traceback": traceback.format_exc()[-4000:]}
        code = 1
    finally:
        events.close()
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str))
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4:
        print("usage: python -m trainers.benchmark.variant RUN_DIR PROVIDER MODE REPEAT",
              file=sys.stderr)
        return 2
    return run(Path(argv[0]).resolve(), argv[1], argv[2], int(argv[3]))


if __name__ == "__main__":
    sys.exit(main())
