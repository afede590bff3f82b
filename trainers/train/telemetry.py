"""A TRL/transformers callback that turns trainer state into `progress` and `eval` events,
and stops the trainer at the next step boundary when a stop is requested.

Its own cost is measured (time spent inside the callback over training time) and reported in
the `finished` event as `telemetry_overhead_pct`.

MFU (trainers/flops.py): at train begin the callback counts the model's FLOPs per token (linear
layers after LoRA is applied, attention over the training rows' lengths); each progress event
turns its tokens/s into model TFLOP/s and MFU, and `finished` gets the whole run's.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from trainers import flops
from trainers.runs.stop_flag import stop_requested

STOP_AT_FILE = "STOP_AT_STEP"

# Logged keys that are progress fields of their own, not extra metrics.
_CORE_KEYS = {"loss", "learning_rate", "grad_norm", "epoch", "num_input_tokens_seen",
              "train_tokens_per_second", "train_runtime"}


def gpu_memory() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"gpu_mem_allocated_gib": None, "gpu_mem_reserved_gib": None}
    return {"gpu_mem_allocated_gib": round(torch.cuda.memory_allocated() / 2**30, 3),
            "gpu_mem_reserved_gib": round(torch.cuda.memory_reserved() / 2**30, 3)}


def process_rss_gib() -> float | None:
    """The worker's resident memory: the memory curve of a run without a GPU."""
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**30, 3)
    except Exception:  # noqa: BLE001 - a missing figure, never a failed step
        return None


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _sig(value: float | None, digits: int = 4) -> float | None:
    """Rounded to significant digits: an MFU may be 0.45 on a GPU or 1e-6 on a CPU."""
    return None if value is None else float(f"{value:.{digits}g}")


def mfu_basis(row_lengths: list[int] | None) -> dict:
    """The started event's peak_tflops, peak_source and mfu_unavailable."""
    import torch

    basis = flops.run_peak(torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    if row_lengths is None:  # the count is one forward and backward per token trained
        basis["mfu_unavailable"] = ("MFU is counted for sft and qlora on decoder-only models; "
                                    "DPO's reference pass, RLHF's generation and encoder-decoder "
                                    "models would need counts of their own")
    return basis


class TelemetryCallback(TrainerCallback):
    def __init__(self, events, run_dir: str | Path, stage: str | None = None,
                 row_lengths: list[int] | None = None):
        """row_lengths: the training rows' token counts, for the FLOPs count; None where the
        count does not apply (mfu_basis says why)."""
        self.events = events
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.stopped = False
        self.overhead_s = 0.0
        self.train_start = self.step_start = time.perf_counter()
        self.step_times: list[float] = []
        self._last_log = (0.0, 0)  # (time, tokens) at the previous progress event
        self.start_step = self.start_tokens = 0  # > 0 when resumed from a checkpoint
        self.last_eval_step: int | None = None
        self.row_lengths = row_lengths
        self.mfu_basis = mfu_basis(row_lengths)
        self.flops_per_token: float | None = None  # counted at train begin

    def _timed(fn):  # decorator: add the callback's own time to overhead_s
        def wrapper(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                self.overhead_s += time.perf_counter() - t0
        return wrapper

    @_timed
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.flops_per_token = self._count_flops(model)
        self.train_start = time.perf_counter()
        self._last_log = (self.train_start, state.num_input_tokens_seen or 0)
        # a resumed trainer has loaded the checkpoint's state by now
        self.start_step, self.start_tokens = state.global_step, state.num_input_tokens_seen or 0

    def _count_flops(self, model) -> float | None:
        """Model FLOPs per token of the model as it trains (LoRA applied). The callback sees no
        batches, so the attention term takes the training rows' lengths (token-weighted), not
        each step's rows: exact over an epoch, an estimate for one step. Reading each batch
        instead would cost a GPU sync per micro-batch and see one rank's rows only."""
        if not self.row_lengths or model is None:
            return None
        layers, width = flops.attention_width(model.config)
        return flops.flops_per_token(self.row_lengths, flops.linear_macs(model), layers, width)

    def mfu_fields(self, tokens_per_s: float) -> dict:
        """Model TFLOP/s at this speed and MFU against the peak. tokens_per_s counts every
        rank's tokens (the trainer gathers them), so MFU divides by every rank's peak."""
        if self.flops_per_token is None:
            return {"model_tflops": None, "mfu": None}
        flops_per_s = tokens_per_s * self.flops_per_token
        per_gpu = flops_per_s / int(os.environ.get("WORLD_SIZE", "1"))
        return {"model_tflops": _sig(flops_per_s / 1e12),
                "mfu": _sig(flops.mfu(per_gpu, self.mfu_basis["peak_tflops"]))}

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_start = time.perf_counter()

    @_timed
    def on_step_end(self, args, state, control, **kwargs):
        self.step_times.append(time.perf_counter() - self.step_start)
        if self._should_stop(state.global_step):
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # a checkpoint at the stop step: the run can resume

    def _should_stop(self, step: int) -> bool:
        """Every rank of a multi-process run must stop at the same step, or the others would
        wait for it forever. Rank 0 turns a stop request into a stop step two steps ahead; the
        ranks move in lockstep (each step all-reduces gradients), so every rank reads that file
        before it reaches the step, and no collective call is added to any step."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        stop_at = self.run_dir / STOP_AT_FILE
        if world_size == 1:  # STOP_AT_STEP also stops a single process at a set step
            return stop_requested(self.run_dir) or (
                stop_at.exists() and step >= int(stop_at.read_text() or step))
        if int(os.environ.get("RANK", "0")) == 0 and stop_requested(self.run_dir) \
                and not stop_at.exists():
            tmp = stop_at.with_suffix(".tmp")
            tmp.write_text(str(step + 2))
            tmp.replace(stop_at)  # atomic: another rank never reads half a number
        return stop_at.exists() and step >= int(stop_at.read_text() or step)

    @_timed
    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        now = time.perf_counter()
        if any(k.startswith("eval_") for k in logs):
            metrics = {k: _clean(v) for k, v in logs.items()}
            loss = metrics.get("eval_loss")
            if self.stage is None and isinstance(loss, (int, float)):  # a language-model loss
                metrics["eval_perplexity"] = _clean(round(math.exp(min(loss, 700.0)), 4))
            self.events.emit("eval", stage=self.stage, step=state.global_step, **metrics)
            self.last_eval_step = state.global_step
            return
        if "train_loss" in logs:
            return  # the trainer's end-of-run summary: the finished event carries it
        tokens = state.num_input_tokens_seen or 0
        last_time, last_tokens = self._last_log
        elapsed = now - self.train_start
        step = state.global_step
        total = state.max_steps
        tokens_per_s = (tokens - last_tokens) / max(now - last_time, 1e-9)
        self.events.emit(
            "progress", stage=self.stage, step=step, total_steps=total,
            epoch=_clean(round(state.epoch or 0, 4)), loss=_clean(logs.get("loss")),
            learning_rate=_clean(logs.get("learning_rate")),
            grad_norm=_clean(logs.get("grad_norm")), tokens_seen=tokens,
            tokens_per_s=round(tokens_per_s, 1), **self.mfu_fields(tokens_per_s),
            step_time_s=round(self.step_times[-1], 4) if self.step_times else None,
            elapsed_s=round(elapsed, 2),
            eta_s=round(elapsed / (step - self.start_step) * (total - step), 1)
            if step > self.start_step and total else None,  # a resumed run's own pace
            metrics={k: _clean(v) for k, v in logs.items() if k not in _CORE_KEYS},
            process_rss_gib=process_rss_gib(), **gpu_memory())
        self._last_log = (now, tokens)

    @_timed
    def on_save(self, args, state, control, **kwargs):
        self.events.emit("saved", stage=self.stage, step=state.global_step, kind="checkpoint",
                         path=str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))

    def summary(self, tokens_per_s: float) -> dict:
        """The finished event's: the callback's own cost, and the run's MFU at its tokens/s."""
        train_time = max(time.perf_counter() - self.train_start, 1e-9)
        return {"telemetry_overhead_s": round(self.overhead_s, 4),
                "telemetry_overhead_pct": round(100 * self.overhead_s / train_time, 3),
                "model_flops_per_token": _sig(self.flops_per_token, 6),
                **self.mfu_fields(tokens_per_s)}
