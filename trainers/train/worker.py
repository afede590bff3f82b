"""One training run, in its own process:  python -m trainers.train.worker RUN_DIR

Reads RUN_DIR/config.json, writes RUN_DIR/events.jsonl, saves the adapter to RUN_DIR/adapter
(or output_dir). The order matters and reads top to bottom in `prepare` and `execute`:
  config -> data (no model yet) -> provider check (imports unsloth first for unsloth runs)
  -> tokenizer -> tokenize, infer max_seq_length, check one batch fits -> model
  -> process fixes -> strategy. The middle part is trainers/train/prepare.py, which the
  benchmark shares.
Exit code 0: finished or stopped; 1: failed (the failed event says why).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from trainers import data as data_mod
from trainers.config import TrainConfig
from trainers.diagnostics import diagnose_exception
from trainers.errors import ConfigError
from trainers.events import EventWriter

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"


class RunContext:
    """Everything a strategy needs; filled step by step by `prepare`."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, events: EventWriter):
        self.cfg = cfg  # after `prepare`: the same config with max_seq_length resolved
        self.max_seq_length_inferred = cfg.max_seq_length == -1
        self.run_dir = run_dir
        self.events = events
        self.adapter_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir / ADAPTER_DIR
        self.checkpoint_dir = run_dir / CHECKPOINT_DIR
        self.provider = None
        self.tokenizer = None
        self.model = None
        self.data = None
        self.train_rows: list[dict] = []
        self.eval_rows: list[dict] = []
        self.token_stats: dict = {}
        self.telemetry = None
        self.resume: dict | None = None  # trainers/runs/resume.py: what this run continues
        self.speed_decisions: list[str] | None = None  # speed_mode's (trainers/speed.py)
        self.started_at = time.time()

    @property
    def max_seq_length(self) -> int:
        return self.cfg.max_seq_length

    # -- the run, top to bottom ------------------------------------------------------------
    def execute(self) -> dict:
        self.prepare()
        from trainers.train.strategies import get_strategy

        return get_strategy(self.cfg.strategy).run(self)

    def prepare(self) -> None:
        """Data, then the one preparation (trainers/train/prepare.py), then the started event."""
        cfg = self.cfg
        if cfg.resume_from:  # before the model loads: a missing checkpoint fails at once
            from trainers.runs.resume import read_resume_file

            self.resume = read_resume_file(self.run_dir)
        self.data = data_mod.load_data(cfg.dataset, cfg.dataset_split, cfg.column_mapping,
                                       cfg.strategy)
        if cfg.speed_mode:  # before the rows: padding-free and the micro-batch are decided here
            from trainers import speed

            cfg, self.speed_decisions = speed.apply(cfg)
            self.cfg = cfg
        from trainers.train.prepare import prepare

        ready = prepare(cfg, self._prepare_rows)
        self.cfg, self.provider = ready.cfg, ready.provider
        self.tokenizer, self.model = ready.tokenizer, ready.model
        from trainers.train.telemetry import TelemetryCallback

        self.telemetry = TelemetryCallback(self.events, self.run_dir,
                                           row_lengths=self._flops_row_lengths())
        self._emit_started(ready.fixes)
        self._announce_tracking_and_resume()

    def _announce_tracking_and_resume(self) -> None:
        """Set the tracker up (trainers/tracking.py) and say in the events what was decided,
        and which checkpoint this run continues."""
        from trainers.tracking import setup_tracking

        for tracking in setup_tracking(self.cfg.report_to, self.run_dir,
                                       self.cfg.name or self.run_dir.name):
            self.events.emit("stage", name="tracking", tracker=tracking["tracker"],
                             mode=tracking["mode"], path=tracking["logs"],
                             message=tracking["message"])
        if self.resume:
            self.events.emit("stage", name="resume", from_run=self.resume["from_run"],
                             path=self.resume["checkpoint"], step=self.resume["step"],
                             message=f"continuing run {self.resume['from_run']} from its "
                                     f"checkpoint at step {self.resume['step']}")

    def _prepare_rows(self, provider, tokenizer) -> TrainConfig:
        """Tokenize once (SFT), split, fit speed mode's batch to the rows, check one batch
        fits; return the config to load the model with (max_seq_length -1 inferred)."""
        cfg = self.cfg
        examples = self.data.examples
        max_seq_length = cfg.max_seq_length
        if provider.info.get("seq2seq"):
            if cfg.max_seq_length == -1:
                model_max = data_mod.model_max_length(cfg.model_name, cfg.trust_remote_code)
                lengths = [len(tokenizer(data_mod.as_prompt_completion(
                    e, tokenizer)["prompt"])["input_ids"]) for e in examples]
                max_seq_length = data_mod.infer_max_seq_length(lengths, model_max)
            rows, self.token_stats = data_mod.tokenize_seq2seq_examples(
                examples, tokenizer, max_seq_length)
        elif not self.data.is_preference:
            lengths_cap = cfg.max_seq_length if cfg.max_seq_length > 0 else 10**9
            rows, stats = data_mod.tokenize_examples(examples, tokenizer, lengths_cap,
                                                     cfg.completion_only_loss)
            if cfg.max_seq_length == -1:
                model_max = data_mod.model_max_length(cfg.model_name, cfg.trust_remote_code)
                max_seq_length = data_mod.infer_max_seq_length(
                    [len(r["input_ids"]) for r in rows], model_max)
                rows, stats = data_mod.tokenize_examples(examples, tokenizer, max_seq_length,
                                                         cfg.completion_only_loss)
            rows, stats["left_out_no_completion_token"] = data_mod.trainable_rows(
                rows, cfg.dataset, max_seq_length)
            self.token_stats = stats
        else:
            rows = [{k: e[k] for k in ("prompt", "chosen", "rejected")} for e in examples]
            if cfg.max_seq_length == -1:
                lengths = [len(tokenizer(r["prompt"] + max(r["chosen"], r["rejected"],
                                                            key=len))["input_ids"])
                           for r in rows]
                model_max = data_mod.model_max_length(cfg.model_name, cfg.trust_remote_code)
                max_seq_length = data_mod.infer_max_seq_length(lengths, model_max)
        too_few = data_mod.eval_split_problem(len(rows), cfg.eval_split,
                                              cfg.per_device_train_batch_size)
        if too_few:
            raise ConfigError([{"field": "eval_split", "message": too_few}])
        self.train_rows, self.eval_rows = data_mod.split_train_eval(rows, cfg.eval_split, cfg.seed)
        cfg = cfg.model_copy(update={"max_seq_length": max_seq_length})
        if cfg.speed_mode and not self.data.is_preference and not provider.info.get("seq2seq"):
            from trainers import speed
            from trainers.estimate import gpu_memory_gib

            cfg, self.speed_decisions = speed.fit_to_rows(
                cfg, [len(r["input_ids"]) for r in self.train_rows], self.speed_decisions,
                gpu_memory_gib())
        data_mod.check_enough_for_a_batch(len(self.train_rows), cfg.per_device_train_batch_size,
                                          cfg.dataset)
        return cfg

    def _flops_row_lengths(self) -> list[int] | None:
        """The training rows' lengths for the MFU count, which is that of a decoder-only model
        trained on its rows (sft, qlora); None for the other jobs (telemetry.mfu_basis)."""
        if self.data.is_preference or self.provider.info.get("seq2seq"):
            return None
        return [len(row["input_ids"]) for row in self.train_rows]

    def _emit_started(self, fixes: dict) -> None:
        from trainers.train.providers.base import device_facts, library_versions

        self.events.emit(
            "started", pid=os.getpid(), strategy=self.cfg.strategy,
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            distributed_strategy=self.cfg.distributed_strategy
            if self.cfg.num_processes > 1 else None,
            max_seq_length=self.max_seq_length,
            max_seq_length_inferred=self.max_seq_length_inferred,
            data_format=self.data.format, num_examples=len(self.data.examples),
            num_train=len(self.train_rows), num_eval=len(self.eval_rows),
            token_stats=self.token_stats, **device_facts(), versions=library_versions(),
            speed_mode=self.speed_decisions,
            per_device_train_batch_size=self.cfg.per_device_train_batch_size,
            gradient_accumulation_steps=self.cfg.gradient_accumulation_steps,
            **self.telemetry.mfu_basis, **self.provider.info, **fixes)

    # -- called by strategies ----------------------------------------------------------------
    def train_and_save(self, trainer, save_to: Path | None = None, stage: str | None = None) -> dict:
        """Train, then save the adapter and tokenizer; return the final metrics."""
        output = trainer.train(
            resume_from_checkpoint=self.resume["checkpoint"] if self.resume else None)
        self._final_eval(trainer)
        save_to = save_to or self.adapter_dir
        # save_model writes on the main process only (and gathers FSDP shards first)
        trainer.save_model(str(save_to))
        if trainer.is_world_process_zero():
            self.tokenizer.save_pretrained(str(save_to))
        self.events.emit("saved", stage=stage, kind="adapter", path=str(save_to),
                         step=trainer.state.global_step)
        return self.final_metrics(trainer, output.metrics)

    def _final_eval(self, trainer) -> None:
        """With held-out data, evaluate once more at the last step (unless that step was just
        evaluated, or the run was stopped): every such run ends with an eval event."""
        stopped = bool(self.telemetry and self.telemetry.stopped)
        last = self.telemetry.last_eval_step if self.telemetry else None
        if trainer.eval_dataset is not None and not stopped and last != trainer.state.global_step:
            trainer.evaluate()

    def final_metrics(self, trainer, metrics: dict) -> dict:
        import torch

        history = trainer.state.log_history
        losses = [h["loss"] for h in history if "loss" in h]
        evals = [(h["eval_loss"], h.get("step")) for h in history
                 if isinstance(h.get("eval_loss"), (int, float))]
        best = min(evals, key=lambda e: e[0]) if evals else (None, None)
        start_tokens = self.telemetry.start_tokens if self.telemetry else 0
        peak = round(torch.cuda.max_memory_allocated() / 2**30, 3) \
            if torch.cuda.is_available() else None
        peaks = _gather_from_ranks(peak)
        # a resumed run counts the tokens it trained on itself
        tokens_per_s = round((trainer.state.num_input_tokens_seen - start_tokens) /
                             max(metrics.get("train_runtime") or 1e-9, 1e-9), 1)
        return {"steps": trainer.state.global_step, "total_steps": trainer.state.max_steps,
                "train_loss": _own_mean_loss(metrics.get("train_loss"), trainer.state.global_step,
                                             self.telemetry.start_step if self.telemetry else 0),
                "first_loss": losses[0] if losses else None,
                "final_loss": losses[-1] if losses else None,
                "train_runtime_s": metrics.get("train_runtime"),
                "tokens_seen": trainer.state.num_input_tokens_seen,
                "tokens_per_s": tokens_per_s,
                "final_eval_loss": evals[-1][0] if evals else None,
                "best_eval_loss": best[0], "best_eval_step": best[1],
                "resumed_from": self.resume["from_run"] if self.resume else None,
                "resumed_at_step": self.resume["step"] if self.resume else None,
                "peak_gpu_mem_allocated_gib": peak,
                "peak_gpu_mem_allocated_gib_per_rank": peaks,
                "world_size": len(peaks),
                "stopped_early": bool(self.telemetry and self.telemetry.stopped),
                **(self.telemetry.summary(tokens_per_s) if self.telemetry else {})}


def _own_mean_loss(train_loss, steps: int, start_step: int):
    """The mean loss of the steps this run trained. transformers divides a resumed run's loss
    sum (its own steps only) by every step since the start of the training; undo that."""
    if not isinstance(train_loss, (int, float)) or not start_step or steps <= start_step:
        return train_loss
    return train_loss * steps / (steps - start_step)


class _SilentEvents:
    """Ranks other than 0 of a multi-process run write no events (rank 0 speaks for the job)."""

    def emit(self, type_: str, **fields) -> dict:
        return {"type": type_, **fields}

    def close(self) -> None:
        pass


def process_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _record_rank_failure(run_dir: Path, rank: int, diagnosis: dict) -> None:
    """A failing rank other than 0 leaves its reason where the run manager looks for it."""
    (run_dir / f"rank{rank}.failed.json").write_text(
        json.dumps({"rank": rank, **diagnosis}, default=str), encoding="utf-8")


def run(run_dir: Path) -> int:
    rank = process_rank()
    events = EventWriter(run_dir) if rank == 0 else _SilentEvents()
    cfg = None
    try:
        cfg = TrainConfig(**json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
        ctx = RunContext(cfg, run_dir, events)
        signal.signal(signal.SIGTERM, lambda *_: _request_stop(run_dir))
        result = ctx.execute()
        kind = "stopped" if result.get("stopped_early") else "finished"
        saved = (ctx.adapter_dir / "adapter_config.json").exists()
        events.emit(kind, adapter_dir=str(ctx.adapter_dir) if saved else None,
                    max_seq_length=ctx.max_seq_length,
                    wall_time_s=round(time.time() - ctx.started_at, 2), **result)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the events file
        traceback.print_exc()
        if isinstance(exc, KeyboardInterrupt):
            events.emit("stopped", message="interrupted before training finished; no adapter")
            return 1
        output_dir = [Path(cfg.output_dir)] if cfg is not None and cfg.output_dir else []
        diagnosis = diagnose_exception(exc, cfg, [run_dir, *output_dir])
        if rank != 0:
            _record_rank_failure(run_dir, rank, diagnosis)
        events.emit("failed", **diagnosis)
        return 1
    finally:
        events.close()


def _gather_from_ranks(value) -> list:
    """[value of rank 0, value of rank 1, ...]; [value] in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def _request_stop(run_dir: Path) -> None:
    from trainers.runs.stop_flag import request_stop

    request_stop(run_dir)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m trainers.train.worker RUN_DIR", file=sys.stderr)
        return 2
    return run(Path(argv[0]).resolve())


if __name__ == "__main__":
    sys.exit(main())
