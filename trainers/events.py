"""The events file: the contract between a worker and everything else.

One JSON object per line, append-only. Every event has a `type` and a `time`; the models below
declare the other fields of each type, and README "A run directory" (docs/benchmarking.md for
the benchmark's) lists them: tests/test_events.py holds the three together.
Writers: `EventWriter.emit` refuses an unknown type, an undeclared field, a missing required
one or a value of the wrong type, so the contract cannot drift silently.
Readers get plain dicts. They wait for a half-written last line (the worker may be mid-write),
skip a line that is not a JSON object with a non-empty string `type`, drop a declared field whose
value has the wrong type, and keep unknown types and fields (another version's), so one bad
line or field never hides the others or crashes a reader.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

EVENTS_FILE = "events.jsonl"
TERMINAL_TYPES = ("finished", "failed", "stopped")


class Event(BaseModel):
    """Every event. A field with a default is one that not every writer of the type sends."""

    model_config = ConfigDict(extra="forbid")
    type: str
    time: float  # Unix seconds


class Started(Event):
    pid: int
    # the training worker's
    strategy: str | None = None
    world_size: int | None = None
    distributed_strategy: str | None = None
    max_seq_length: int | None = None
    max_seq_length_inferred: bool | None = None
    data_format: str | None = None
    num_examples: int | None = None
    num_train: int | None = None
    num_eval: int | None = None
    token_stats: dict | None = None  # empty for preference data
    speed_mode: list[str] | None = None  # speed_mode's decisions, each with its reason
    per_device_train_batch_size: int | None = None  # as trained (speed_mode may change them)
    gradient_accumulation_steps: int | None = None
    device: str | None = None
    device_name: str | None = None
    device_memory_gib: float | None = None
    compute_capability: str | None = None
    bf16_supported: bool | None = None
    cuda_version: str | None = None
    peak_tflops: float | None = None  # what MFU is counted against (trainers/flops.py)
    peak_source: str | None = None
    mfu_unavailable: str | None = None  # why there is no MFU, said once
    versions: dict[str, str | None] | None = None  # library -> version, None if not installed
    # the provider's (Provider.info and its process fixes)
    provider: str | None = None
    architecture: str | None = None
    seq2seq: bool | None = None
    attention: str | None = None
    quantization: str | None = None
    dtype: str | None = None
    target_modules: list[str] | None = None
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    trl_lm_head: str | None = None
    os: str | None = None  # unsloth only, from here on
    warnings: list[str] | None = None
    flash_attention_disabled: bool | None = None
    gradient_checkpointing: str | bool | None = None
    unsloth: dict | None = None  # its patch evidence
    # the benchmark runner's
    kind: Literal["benchmark"] | None = None
    spec: dict | None = None
    variants: list[str] | None = None
    environment: dict | None = None
    command: str | None = None


class Progress(Event):
    step: int
    total_steps: int
    loss: float | None = None
    step_time_s: float | None = None
    # the training worker's
    stage: str | None = None
    epoch: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_seen: int | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    metrics: dict | None = None  # the strategy's other logged values
    gpu_mem_allocated_gib: float | None = None
    gpu_mem_reserved_gib: float | None = None
    process_rss_gib: float | None = None  # the worker's resident memory
    model_tflops: float | None = None  # model FLOPs per second at tokens_per_s, all GPUs
    mfu: float | None = None  # 0..1 of the started event's peak_tflops, per GPU
    # a benchmark variant's
    variant: str | None = None


class Eval(Event):
    """Besides these, the trainer's metrics as it logged them, each named eval_*."""

    model_config = ConfigDict(extra="allow")
    open_prefix: ClassVar[str] = "eval_"
    step: int
    stage: str | None = None
    epoch: float | None = None
    num_input_tokens_seen: int | None = None

    @model_validator(mode="after")
    def _only_eval_metrics_are_open(self):
        wrong = [k for k in self.model_extra or {} if not k.startswith(self.open_prefix)]
        if wrong:
            raise ValueError(f"undeclared fields {wrong}: only {self.open_prefix}* ones are open")
        return self


class Saved(Event):
    step: int
    kind: Literal["checkpoint", "adapter"]
    path: str
    stage: str | None = None


class Stage(Event):
    """A step without progress of its own; which fields it has depends on `name`."""

    name: str
    message: str | None = None  # the benchmark's
    trainer: str | None = None
    pairs: int | None = None  # dpo and reward_model
    eval_pairs: int | None = None  # dpo
    prompts_cut: int | None = None
    max_prompt_length: int | None = None
    reference: str | None = None  # dpo and policy
    loader: str | None = None  # reward_model
    provider: str | None = None
    path: str | None = None
    pairs_cut: int | None = None
    pairs_dropped_too_long: int | None = None
    target_modules: list[str] | None = None
    num_generations: int | None = None  # policy
    max_new_tokens: int | None = None
    beta: float | None = None
    prompts: int | None = None
    skipped: bool | None = None
    reason: str | None = None
    tracker: str | None = None  # tracking (the path field: where its logs go)
    mode: str | None = None
    from_run: str | None = None  # resume (path: the checkpoint)
    step: int | None = None


class Finished(Event):
    # the training worker's
    adapter_dir: str | None = None
    max_seq_length: int | None = None
    wall_time_s: float | None = None
    steps: int | None = None
    total_steps: int | None = None
    train_loss: float | None = None
    first_loss: float | None = None
    final_loss: float | None = None
    train_runtime_s: float | None = None
    tokens_seen: int | None = None
    tokens_per_s: float | None = None
    peak_gpu_mem_allocated_gib: float | None = None
    peak_gpu_mem_allocated_gib_per_rank: list[float | None] | None = None
    world_size: int | None = None
    stopped_early: bool | None = None
    telemetry_overhead_s: float | None = None
    telemetry_overhead_pct: float | None = None
    model_flops_per_token: float | None = None  # sft/qlora: MFU's count
    model_tflops: float | None = None  # at the run's tokens_per_s
    mfu: float | None = None
    trainer_class: str | None = None
    final_eval_loss: float | None = None  # with eval_split > 0
    best_eval_loss: float | None = None
    best_eval_step: int | None = None
    resumed_from: str | None = None  # a run resumed from another's checkpoint
    resumed_at_step: int | None = None
    final_rewards_margins: float | None = None  # dpo
    final_rewards_chosen: float | None = None
    final_rewards_rejected: float | None = None
    final_rewards_accuracies: float | None = None
    reward_model_dir: str | None = None  # rlhf
    reward_model_steps: int | None = None
    reward_model_loss: float | None = None
    reward_model_accuracy: float | None = None
    reward_model_eval_accuracy: float | None = None
    policy_adapter_saved: bool | None = None
    final_reward: float | None = None
    final_kl: float | None = None
    # the benchmark runner's
    table: list[dict] | None = None
    complete: bool | None = None
    matching: dict[str, str] | None = None
    synthetic_weights: bool | None = None
    results: dict[str, str] | None = None


class Stopped(Finished):
    message: str | None = None  # interrupted before training finished


class Failed(Event):
    error_type: str
    message: str
    hint: str | None = None
    remedies: list[str] | None = None  # out of memory
    problems: list[dict] | None = None  # a config error, one per field


class _Variant(Event):
    index: int
    total: int
    name: str
    provider: str
    mode: str
    repeat: int
    process_wall_s: float


class VariantStarted(Event):
    variant: str
    index: int
    total: int
    provider: str
    mode: str
    repeat: int


class VariantFinished(_Variant):
    tokens_per_s: float  # over the total measured time
    tokens_per_s_median: float | None = None
    median_step_s: float
    max_allocated_gib: float | None = None
    first_step_loss: float | None = None


class VariantFailed(_Variant):
    error_type: str | None = None
    message: str | None = None
    hint: str | None = None


EVENT_MODELS: dict[str, type[Event]] = {
    "started": Started, "progress": Progress, "eval": Eval, "saved": Saved, "stage": Stage,
    "finished": Finished, "stopped": Stopped, "failed": Failed,
    "variant_started": VariantStarted, "variant_finished": VariantFinished,
    "variant_failed": VariantFailed,
}


class EventWriter:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self._fh = self.path.open("a", encoding="utf-8")

    def emit(self, type_: str, **fields) -> dict:
        """Write one event; ValueError (pydantic's ValidationError is one) if it breaks the
        contract. The fields are written as given: the model checks them, it does not fill
        them in."""
        model = EVENT_MODELS.get(type_)
        if model is None:
            raise ValueError(f"unknown event type {type_!r}; known: {', '.join(EVENT_MODELS)}")
        event = {"type": type_, "time": round(time.time(), 3), **fields}
        model.model_validate(event)
        self._fh.write(json.dumps(event, default=str) + "\n")
        self._fh.flush()
        return event

    def close(self) -> None:
        self._fh.close()


def parse_event(line: bytes | str, seq: int) -> dict | None:
    """One complete line as an event with its 0-based `seq`, or None when it is not one: damaged
    JSON, or JSON that is not an object with a non-empty string `type`. A declared field of the
    wrong type is dropped; unknown types and fields are kept. Every reader uses this."""
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):  # also bad UTF-8, absurd nesting
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not event["type"]:
        return None
    model = EVENT_MODELS.get(event["type"])
    if model is not None:
        try:
            model.model_validate(event, extra="ignore")
        except ValidationError as exc:  # a missing field is dropped already: a no-op
            wrong = {err["loc"][0] for err in exc.errors() if err["loc"]}
            event = {k: v for k, v in event.items() if k not in wrong}
    return {**event, "seq": seq}  # the reader's seq, whatever the line holds


def read_events(run_dir: str | Path, after: int = 0) -> list[dict]:
    """Events after the first `after` lines (each gets its 0-based line index as `seq`)."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return []
    events = []
    with path.open("rb") as fh:
        for seq, line in enumerate(fh):
            if seq < after:
                continue
            if not line.endswith(b"\n"):
                break  # still being written
            event = parse_event(line, seq)
            if event is not None:
                events.append(event)
    return events


def last_event(events: list[dict], type_: str) -> dict | None:
    return next((e for e in reversed(events) if e["type"] == type_), None)


def terminal_event(events: list[dict]) -> dict | None:
    return next((e for e in reversed(events) if e["type"] in TERMINAL_TYPES), None)
