"""The benchmark job:  python -m trainers.benchmark.runner RUN_DIR

Reads RUN_DIR/config.json (a BenchmarkSpec) and, top to bottom:
  1. records the environment (no CUDA context is created here);
  2. prepares once what every variant shares: the model directory (synthetic weights are built
     in a separate process) and the tokenized rows in training order -> RUN_DIR/prepared.json;
  3. runs every repeat x mode x provider as a fresh `trainers.benchmark.variant` process, one
     after another; a variant that fails is kept, with its reason;
  4. with check_plain, runs the bare-library script (plain_script.py, copied to RUN_DIR/plain/
     with its settings) per provider x mode in a fresh process on the same rows, after each of
     the engine's first plain_repeats rounds (BenchmarkSpec.run_order);
  5. checks matching and writes RUN_DIR/results.json, results.md and results.csv (rewritten
     after every variant, so a stopped or killed benchmark keeps what it measured).
Events (started, stage, variant_started, progress, variant_finished, variant_failed, then
finished / stopped / failed) go to RUN_DIR/events.jsonl; the plain script's runs are `stage`
events named plain_script. Exit code 0 when the benchmark ran to its end (failed variants
included), 1 when it could not.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from trainers.benchmark import report
from trainers.benchmark.spec import SAMPLE_DATASET, BenchmarkSpec, build_spec
from trainers.benchmark.variant import (PREPARED_FILE, RESULT_FILE, VARIANTS_DIR,
                                        step_lengths, variant_name)
from trainers.errors import DataError
from trainers.events import EventWriter
from trainers.runs.stop_flag import request_stop, stop_requested

SYNTHETIC_DIR = "synthetic-model"
VARIANT_LOG = "variant.log"
PLAIN_DIR = "plain"
PLAIN_SCRIPT = Path(__file__).with_name("plain_script.py")


# --- preparing what every variant shares ---------------------------------------------------

def dataset_path(spec: BenchmarkSpec) -> str:
    if spec.dataset == SAMPLE_DATASET:
        from trainers.tools.demo import SAMPLE_SFT

        return str(SAMPLE_SFT)
    return spec.dataset


def prepare_model(spec: BenchmarkSpec, run_dir: Path,
                  events: EventWriter) -> tuple[str, dict | None]:
    """(model directory or hub id, synthetic marker or None)."""
    if not spec.synthetic_weights:
        return spec.model, None
    from trainers.benchmark.synthetic import resolve_family, synthetic_info

    key = resolve_family(spec.model)
    out = Path(os.environ.get("MODELFORGE_SYNTHETIC_DIR") or run_dir / SYNTHETIC_DIR) / key
    info = synthetic_info(out)
    if info is None or info.get("seed") != spec.seed or info.get("family") != key:
        events.emit("stage", name="synthetic_model", message=f"building {key} with synthetic "
                                                              f"weights in {out}")
        cmd = [sys.executable, "-m", "trainers.benchmark.synthetic", key, str(out),
               str(spec.seed)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=str(run_dir))
        if done.returncode != 0:
            raise RuntimeError(f"building the synthetic {key} model failed:\n"
                               f"{done.stderr[-3000:]}")
        info = synthetic_info(out)
    return str(out), info


def select_rows(rows: list[dict], spec: BenchmarkSpec) -> tuple[list[dict], int]:
    """Rows long enough, shuffled with the seed, repeated to fill every step exactly.

    Rows whose loss mask is empty after truncation are left out here, as TRL's SFTTrainer
    would drop them ("fully masked"), so the rows counted are the rows trained on.
    """
    trainable = [r for r in rows if any(r["completion_mask"])]
    long_enough = [r for r in trainable if len(r["input_ids"]) >= spec.min_example_tokens]
    if not long_enough:
        longest = max(len(r["input_ids"]) for r in trainable) if trainable else 0
        raise DataError(f"no example has at least {spec.min_example_tokens} tokens with a "
                        f"completion left after truncation to {spec.max_seq_length} (the longest "
                        f"has {longest}).", "Lower min_example_tokens, raise max_seq_length, or "
                                            "use longer examples.")
    random.Random(spec.seed).shuffle(long_enough)
    needed = spec.total_steps * spec.batch_size
    ordered = [long_enough[i % len(long_enough)] for i in range(needed)]
    return longest_into_warmup(ordered, spec), len(long_enough)


def longest_into_warmup(ordered: list[dict], spec: BenchmarkSpec) -> list[dict]:
    """Swap the longest row into the last warm-up batch (if it is not in the warm-up already).

    A compile that a new shape triggers is then paid before the measured steps: Unsloth's padded
    runs recompile at their first batch padded to max_seq_length (8B on the H200: 6-9 s, once;
    docs/benchmarking.md), which in a short measured window outweighs every other step.
    """
    warmup_slots = spec.warmup_steps * spec.batch_size
    if not warmup_slots:
        return ordered
    longest = max(range(len(ordered)), key=lambda i: len(ordered[i]["input_ids"]))
    if longest >= warmup_slots:
        slot = warmup_slots - spec.batch_size
        ordered[slot], ordered[longest] = ordered[longest], ordered[slot]
    return ordered


def batch_facts(rows: list[dict], spec: BenchmarkSpec) -> dict:
    """What the batches hold: padding (when padded to the longest row) and loss tokens."""
    steps = step_lengths(rows, spec.batch_size)
    tokens = sum(sum(s) for s in steps)
    slots = sum(max(s) * len(s) for s in steps)
    loss = sum(sum(r["completion_mask"]) for r in rows) if spec.completion_only_loss else tokens
    return {"tokens": tokens, "padded_slots": slots,
            "padding_share_when_padded": 1 - tokens / slots, "loss_tokens": loss,
            "loss_token_share": loss / tokens}


def prepare(spec: BenchmarkSpec, run_dir: Path, events: EventWriter) -> dict:
    """Model and tokenized rows, written to RUN_DIR/prepared.json for every variant to read."""
    from trainers import data as data_mod
    from trainers.benchmark.variant import load_tokenizer

    model_dir, synthetic = prepare_model(spec, run_dir, events)
    tokenizer_dir = spec.tokenizer or model_dir
    events.emit("stage", name="tokenize", message="tokenizing the data once for every variant")
    source = dataset_path(spec)
    loaded = data_mod.load_data(source, column_mapping=spec.column_mapping, strategy="sft")
    tokenizer = load_tokenizer(tokenizer_dir)
    rows, _ = data_mod.tokenize_examples(loaded.examples, tokenizer, spec.max_seq_length,
                                         spec.completion_only_loss)
    ordered, distinct = select_rows(rows, spec)
    fully_masked = sum(1 for r in rows if not any(r["completion_mask"]))
    lengths = [len(r["input_ids"]) for r in ordered]
    largest_batch_tokens = max(sum(step) for step in step_lengths(ordered, spec.batch_size))
    from trainers.benchmark.best import decide_all

    prepared = {
        "model_dir": model_dir, "tokenizer_dir": tokenizer_dir, "synthetic": synthetic,
        "best_settings": decide_all(spec, model_dir, largest_batch_tokens),
        "dataset": source, "data_format": loaded.format, "num_examples": len(loaded.examples),
        "distinct_rows": distinct, "rows_repeated": distinct < len(ordered),
        "left_out_fully_masked": fully_masked,
        "token_stats": data_mod.token_stats(lengths, spec.max_seq_length),
        "batch_facts": batch_facts(ordered, spec),
        "rows": [{"input_ids": r["input_ids"], "completion_mask": r["completion_mask"]}
                 for r in ordered],
    }
    (run_dir / PREPARED_FILE).write_text(json.dumps(prepared))
    return prepared


def warm_libraries(spec: BenchmarkSpec, events: EventWriter) -> dict:
    """The CUDA libraries read once before any variant (trainers/benchmark/page_cache.py)."""
    from trainers.benchmark import page_cache
    from trainers.runs.manager import visible_gpus

    if not visible_gpus():  # no process here launches a CUDA kernel: nothing to warm
        return {"warmed": False, "no_gpu": True}
    if not spec.warm_libraries:
        return {"warmed": False, **page_cache.resident(page_cache.library_files())}
    events.emit("stage", name="page_cache", message="reading the CUDA libraries into the page "
                                                    "cache, so every variant starts warm")
    return {"warmed": True, **page_cache.warm(page_cache.library_files())}


# --- running one variant -------------------------------------------------------------------

def variant_command(run_dir: Path, provider: str, mode: str, repeat: int) -> list[str]:
    return [sys.executable, "-m", "trainers.benchmark.variant", str(run_dir), provider, mode,
            str(repeat)]


COMPILE_CACHE_DIR = "compile-caches"


def measured_env(spec: BenchmarkSpec, run_dir: Path, name: str) -> dict:
    """The environment of one measured process: its own compile caches (spec.fresh_compile_caches)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if spec.fresh_compile_caches:
        caches = run_dir / COMPILE_CACHE_DIR / name
        shutil.rmtree(caches, ignore_errors=True)  # a re-run of the same name starts empty too
        env.update(TRITON_CACHE_DIR=str(caches / "triton"),
                   TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"))
    return env


def variant_env(spec: BenchmarkSpec, provider: str, run_dir: Path, name: str) -> dict:
    env = measured_env(spec, run_dir, name)
    if provider == "unsloth" and spec.padding == "padded":
        env["UNSLOTH_DISABLE_AUTO_PADDING_FREE"] = "1"
    if spec.padding == "best":  # speed mode's allocator, as a training run's (trainers/speed.py)
        from trainers.speed import allocator_env

        env.update(allocator_env(provider, env))
    return env


def _wait(proc: subprocess.Popen, run_dir: Path, timeout_s: float) -> str | None:
    """Wait for the variant; stop it on timeout or a stop request. Returns why it was stopped."""
    deadline = time.time() + timeout_s
    while proc.poll() is None:
        reason = None
        if stop_requested(run_dir):
            reason = "stopped: the benchmark was asked to stop"
        elif time.time() > deadline:
            reason = f"timed out after {timeout_s:.0f} s (variant_timeout_s)"
        if reason:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return reason
        time.sleep(0.5)
    return None


def run_process(cmd: list[str], env: dict, run_dir: Path, log_path: Path, result_path: Path,
                base: dict, timeout_s: float) -> dict:
    """Run one measured process to its end; its result file, or why there is none."""
    result_path.unlink(missing_ok=True)
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, cwd=str(run_dir))
        stopped = _wait(proc, run_dir, timeout_s)
    wall = time.perf_counter() - started
    if result_path.is_file():
        result = {**base, **json.loads(result_path.read_text())}
    else:
        result = _failure(base, run_dir, log_path, proc.returncode, stopped)
    extra_env = {k: env[k] for k in env if k.startswith(("UNSLOTH_", "TRITON_CACHE",
                                                         "TORCHINDUCTOR_CACHE"))
                 and os.environ.get(k) != env[k]}
    result.update(process_wall_s=wall, returncode=proc.returncode,
                  command=" ".join([*(f"{k}={v}" for k, v in extra_env.items()),
                                    *map(shlex.quote, cmd)]),
                  log=str(log_path))
    return result


def run_variant(spec: BenchmarkSpec, run_dir: Path, provider: str, mode: str,
                repeat: int) -> dict:
    name = variant_name(provider, mode, repeat)
    out = run_dir / VARIANTS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    base = {"name": name, "provider": provider, "mode": mode, "repeat": repeat}
    return run_process(variant_command(run_dir, provider, mode, repeat),
                       variant_env(spec, provider, run_dir, name), run_dir, out / VARIANT_LOG,
                       out / RESULT_FILE, base, spec.variant_timeout_s)


def _failure(base: dict, run_dir: Path, log_path: Path, returncode: int,
             stopped: str | None) -> dict:
    base = {**base, "status": "failed"}
    if stopped is None and stop_requested(run_dir):  # the signal reached it first
        stopped = "stopped: the benchmark was asked to stop"
    if stopped:
        return {**base, "error_type": "stopped", "message": f"{base['name']} was {stopped}.",
                "hint": "Raise variant_timeout_s, or lower steps." if "timed out" in stopped
                else ""}
    from trainers.runs.process import exit_description

    killed = returncode is not None and returncode < 0
    return {**base, "error_type": "killed" if killed else "crashed",
            "message": f"The process of {base['name']} {exit_description(returncode)} without a "
                       "result.",
            "hint": "Killed from outside: often the out-of-memory killer (check dmesg); lower "
                    "batch_size or max_seq_length." if killed else f"See {log_path}.",
            "log_tail": _tail(log_path)}


# --- the plain script: the same run with the bare libraries ----------------------------------

def plain_settings(spec: BenchmarkSpec, prepared: dict, run_dir: Path, mode: str) -> dict:
    """Everything plain_script.py needs, from the spec: every SFTConfig argument explicit,
    as the engine's variants set them (TRL's defaults change when unsloth is imported)."""
    sft = {
        "max_steps": spec.total_steps, "per_device_train_batch_size": spec.batch_size,
        "gradient_accumulation_steps": 1, "learning_rate": spec.learning_rate,
        "lr_scheduler_type": "constant", "warmup_steps": 0, "weight_decay": 0.0,
        "max_grad_norm": 1.0, "optim": spec.optimizer, "bf16": spec.precision == "bf16",
        "fp16": spec.precision == "fp16", "gradient_checkpointing": spec.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False}, "seed": spec.seed,
        "data_seed": spec.seed, "logging_steps": 1, "logging_first_step": True,
        "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "disable_tqdm": True,
        "include_num_input_tokens_seen": "non_padding", "remove_unused_columns": False,
        "max_length": spec.max_seq_length, "packing": False, "dataset_num_proc": None,
        "completion_only_loss": spec.completion_only_loss,
        "train_sampling_strategy": "sequential",
    }
    if spec.padding == "padded":
        sft["padding_free"] = False
    elif spec.padding in ("padding_free", "best"):
        sft.update(padding_free=True, max_length=None)  # the rows are already truncated
    best = {key: value for key, value in prepared.get("best_settings", {}).items()
            if key.endswith(f"-{mode}")}
    return {
        "about": "Settings for plain_script.py, generated by ModelForge from the benchmark's "
                 "spec (the run directory's config.json).",
        "mode": mode, "model_dir": prepared["model_dir"],
        "tokenizer_dir": prepared["tokenizer_dir"], "rows_file": str(run_dir / PREPARED_FILE),
        "precision": spec.precision, "load_in_4bit": mode == "qlora4",
        "max_seq_length": spec.max_seq_length, "warmup_steps": spec.warmup_steps,
        "cudnn_attention": spec.cudnn_attention, "attention": spec.attention,
        "gradient_checkpointing": spec.gradient_checkpointing,
        "lora": {"r": spec.lora_r, "alpha": spec.lora_alpha, "dropout": 0.0,
                 "target_modules": spec.target_modules},
        "unsloth_environment": {"UNSLOTH_DISABLE_AUTO_PADDING_FREE": "1"}
        if spec.padding == "padded" else {},
        "sft_config": sft,
        "provider_overrides": _provider_overrides(spec, best),
    }


def _provider_overrides(spec: BenchmarkSpec, best: dict) -> dict:
    """What differs per provider: padding "best"'s decisions (best.py) and speed mode's
    allocator, and the spec's Liger and torch_compile, which are for Hugging Face only."""
    from trainers.speed import allocator_env

    overrides = {key.rsplit("-", 1)[0]: {
        "environment": allocator_env(key.rsplit("-", 1)[0]),  # as the engine's variant's
        "gradient_checkpointing": d["gradient_checkpointing"],
        "attention": d.get("attention", spec.attention),
        "fused_lora": bool(d.get("fused_lora")),
        "sft_config": {"gradient_checkpointing": d["gradient_checkpointing"],
                       **({"use_liger_kernel": True} if d["liger_kernel"] else {})}}
        for key, d in best.items()}
    hf_args = {"use_liger_kernel": spec.liger_kernel, "torch_compile": spec.torch_compile}
    for name in [n for n, on in hf_args.items() if on]:
        overrides.setdefault("huggingface", {}).setdefault("sft_config", {})[name] = True
    return overrides


def write_plain(spec: BenchmarkSpec, prepared: dict, run_dir: Path) -> Path:
    """RUN_DIR/plain/: the script and one settings file per mode, to read and re-run."""
    folder = run_dir / PLAIN_DIR
    folder.mkdir(exist_ok=True)
    shutil.copyfile(PLAIN_SCRIPT, folder / PLAIN_SCRIPT.name)
    for mode in spec.modes:
        (folder / f"settings-{mode}.json").write_text(
            json.dumps(plain_settings(spec, prepared, run_dir, mode), indent=2))
    return folder


def plain_name(spec: BenchmarkSpec, provider: str, mode: str, repeat: int) -> str:
    """plain-PROVIDER-MODE, with -rN when the plain script runs more than once."""
    return f"plain-{provider}-{mode}" + (f"-r{repeat}" if spec.plain_repeats > 1 else "")


def run_plain(spec: BenchmarkSpec, run_dir: Path, provider: str, mode: str, repeat: int) -> dict:
    folder = run_dir / PLAIN_DIR
    name = plain_name(spec, provider, mode, repeat)
    cmd = [sys.executable, str(folder / PLAIN_SCRIPT.name), str(folder / f"settings-{mode}.json"),
           provider, str(folder / f"{name}.json")]
    return run_process(cmd, measured_env(spec, run_dir, name), run_dir, folder / f"{name}.log",
                       folder / f"{name}.json",
                       {"name": name, "provider": provider, "mode": mode, "repeat": repeat},
                       spec.variant_timeout_s)


def _plain_message(summary: dict, result: dict) -> str:
    if result["status"] != "ok":
        return f"{result['name']} FAILED: {result.get('message')}"
    row = next((r for r in summary["table"]
                if r["provider"] == result["provider"] and r["mode"] == result["mode"]), {})
    ratio = row.get("engine_vs_plain_ratio")
    speed = result["timing"]["tokens_per_s_total"]
    so_far = " (the means of the runs so far)" if row.get("plain_runs_ok", 1) > 1 else ""
    return (f"{result['name']}: {speed:,.0f} tokens/s; engine/plain "
            + ("-" if ratio is None else f"{ratio:.3f}{so_far}"))


def _tail(path: Path, max_bytes: int = 3000) -> str:
    if not path.exists():
        return ""
    data = path.read_bytes()
    return data[-max_bytes:].decode("utf-8", errors="replace")


def _variant_event(result: dict) -> dict:
    """The short form of a variant's result for its event."""
    keep = {"name": result["name"], "provider": result["provider"], "mode": result["mode"],
            "repeat": result["repeat"], "process_wall_s": round(result["process_wall_s"], 2)}
    if result["status"] != "ok":
        return {**keep, "error_type": result.get("error_type"), "message": result.get("message"),
                "hint": result.get("hint")}
    return {**keep, "tokens_per_s": round(result["timing"]["tokens_per_s_total"], 1),
            "tokens_per_s_median": round(result["timing"]["tokens_per_s"], 1),
            "median_step_s": round(result["timing"]["median_step_s"], 4),
            "max_allocated_gib": result["memory"]["max_allocated_gib"],
            "first_step_loss": result["loss"]["first_step"]}


# --- the job -------------------------------------------------------------------------------

def execute(spec: BenchmarkSpec, run_dir: Path, events: EventWriter, env: dict) -> dict:
    plan = spec.variants()
    events.emit("started", kind="benchmark", pid=os.getpid(), spec=spec.model_dump(mode="json"),
                variants=[variant_name(p, m, r) for r, m, p in plan], environment=env,
                command=_runner_command(run_dir))
    prepared = prepare(spec, run_dir, events)
    meta = {k: v for k, v in prepared.items() if k != "rows"}
    meta["page_cache"] = warm_libraries(spec, events)
    results: list[dict] = []
    plain: list[dict] = []

    def summary() -> dict:
        return report.build(spec, meta, env, results, _runner_command(run_dir),
                            planned=len(plan), plain_runs=plain)

    folder = write_plain(spec, prepared, run_dir) if spec.check_plain else None
    for kind, repeat, mode, provider in spec.run_order():
        if stop_requested(run_dir):
            break
        if kind == "plain":
            events.emit("stage", name="plain_script", message=f"plain script (bare libraries, "
                        f"{folder}): {plain_name(spec, provider, mode, repeat)}")
            plain.append(run_plain(spec, run_dir, provider, mode, repeat))
            done = summary()
            report.write_all(run_dir, done)
            events.emit("stage", name="plain_script", message=_plain_message(done, plain[-1]))
            continue
        index = len(results) + 1
        name = variant_name(provider, mode, repeat)
        events.emit("variant_started", variant=name, index=index, total=len(plan),
                    provider=provider, mode=mode, repeat=repeat)
        result = run_variant(spec, run_dir, provider, mode, repeat)
        results.append(result)
        event = "variant_finished" if result["status"] == "ok" else "variant_failed"
        events.emit(event, index=index, total=len(plan), **_variant_event(result))
        report.write_all(run_dir, summary())
    return summary()


def _runner_command(run_dir: Path) -> str:
    return f"{shlex.quote(sys.executable)} -m trainers.benchmark.runner {shlex.quote(str(run_dir))}"


def run(run_dir: Path) -> int:
    from trainers.benchmark.environment import environment

    events = EventWriter(run_dir)
    signal.signal(signal.SIGTERM, lambda *_: request_stop(run_dir))
    try:
        spec = build_spec(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
        summary = execute(spec, run_dir, events, environment())
        report.write_all(run_dir, summary)
        kind = "stopped" if stop_requested(run_dir) else "finished"
        events.emit(kind, **report.event_summary(summary, run_dir))
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the events file
        traceback.print_exc()
        from trainers.diagnostics import diagnose_exception

        events.emit("failed", **diagnose_exception(exc))
        return 1
    finally:
        events.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m trainers.benchmark.runner RUN_DIR", file=sys.stderr)
        return 2
    return run(Path(argv[0]).resolve())


if __name__ == "__main__":
    sys.exit(main())
