"""The one config schema for a training run.

The dashboard form, the REST API body, the CLI's config files and each run's saved
`config.json` all come from `TrainConfig`. Each field is documented where it is declared; the
`group` in its metadata places it in the dashboard form, and `path` marks the fields that name
a local file ("file"), model directory ("model") or output folder ("dir"): the server's path
rules and the CLI's absolute paths follow those marks. Importing this module is cheap
(pydantic and the standard library only), so the server can validate without torch.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Union

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from trainers.errors import ConfigError

COMMON_SEQ_LENGTHS = (512, 1024, 2048, 4096, 8192)
MAX_SEED = 2**32 - 1  # numpy's and torch's seeding take 32 bits
MAX_EPOCHS = 10000
RUN_ID_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")  # trainers.runs.process.new_run_id
NUM_GENERATIONS_CHOICES = (4, 2)  # rlhf's default num_generations: the first that fits a step
MAX_PROCESSES = 1024  # a static sanity cap; the run manager checks this machine's GPUs/CPUs
MAX_SEQ_LENGTH = 2**20  # a million tokens: past every model's context
MAX_STEPS = 10**8
MAX_INT = 2**53  # past this a whole number is no longer exact as a float (the estimates use floats)


def _field(default: Any, group: str, description: str, path: str = "", **kwargs: Any) -> Any:
    """A config field with its documentation, its place in the dashboard form and, for a
    path, its kind: "file", "model" (a local directory or a hub id) or "dir" (an output)."""
    extra = {"group": group, **({"path": path} if path else {})}
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(map(_has_lone_surrogate, [*value, *value.values()]))
    return isinstance(value, (list, tuple)) and any(map(_has_lone_surrogate, value))


class TextFields(BaseModel):
    """A schema whose text is valid Unicode. JSON can carry a lone surrogate ("\\ud800") that
    no file name, database or log can store: it is refused as the field's error."""

    @field_validator("*", mode="before")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        if _has_lone_surrogate(value):
            raise ValueError("it holds a lone surrogate such as \\ud800, which is not text: "
                             "remove it")
        return value


class TrainConfig(TextFields):
    """A fine-tuning run. Unknown keys are rejected, never dropped."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # --- model and provider -------------------------------------------------------------
    provider: Literal["huggingface", "unsloth"] = _field(
        "huggingface", "model",
        "Training back end. `huggingface`: transformers + peft + bitsandbytes + TRL. "
        "`unsloth`: Unsloth's FastLanguageModel (needs a fixed max_seq_length).")
    model_name: str = _field(
        ..., "model", "Hub id (e.g. meta-llama/Llama-3.2-3B) or a local model directory.",
        path="model")
    max_seq_length: int = _field(
        2048, "model",
        "Longest sequence in tokens; longer examples are truncated. -1 infers it from the data "
        "set's token lengths, capped at the model's maximum (huggingface provider only).")
    task: Literal["text-generation", "summarization", "question-answering"] = _field(
        "text-generation", "model",
        "What the data teaches: text-generation, summarization or question-answering.")
    strategy: Literal["sft", "qlora", "dpo", "rlhf"] = _field(
        "sft", "model",
        "sft: supervised LoRA fine-tune. qlora: the same on a 4-bit quantized base model. "
        "dpo: direct preference optimisation on chosen/rejected pairs. rlhf: a reward model, "
        "then online RL (GRPO) of the policy against it.")
    trust_remote_code: bool = _field(
        False, "model",
        "Run Python code shipped inside the model repository. Off unless you trust the model "
        "and the server operator allows it.")

    # --- data ---------------------------------------------------------------------------
    dataset: str = _field(
        ..., "data",
        "A local .json, .jsonl, .csv or .parquet file, or a hub data set id (needs a network).",
        path="file")
    dataset_split: str = _field("train", "data", "Split to read from a hub data set.")
    column_mapping: dict[str, str] = _field(
        {}, "data",
        "Overrides format detection: maps a standard field (text, prompt, completion, "
        "instruction, input, output, messages, document, summary, question, context, answer, "
        "chosen, rejected) to the column that holds it, e.g. {\"prompt\": \"question_text\"}.")
    completion_only_loss: bool = _field(
        True, "data",
        "For prompt/completion-style data, compute the loss on the completion tokens only.")
    eval_split: float = _field(
        0.0, "data", "Fraction of the data held out for evaluation, 0 <= eval_split < 1.")
    eval_steps: int = _field(
        0, "data",
        "With eval_split > 0: evaluate on the held-out data every N optimizer steps (eval_loss "
        "and perplexity, DPO's eval rewards), and once more at the end; 0 = every "
        "10 x logging_steps, at least every 10 steps.")
    packing: bool = _field(
        False, "data", "Pack several short examples into each max_seq_length sequence.")
    padding_free: bool = _field(
        False, "data", "SFT: concatenate each batch's rows without padding tokens; attention "
                       "keeps the rows apart by their position ids, so the loss is the padded "
                       "run's. Faster when rows differ in length.")

    # --- LoRA ---------------------------------------------------------------------------
    lora_r: int = _field(16, "lora", "LoRA rank (>= 1). Higher = more trainable parameters.")
    lora_alpha: float = _field(32, "lora", "LoRA scaling numerator (> 0); scale = alpha / r.")
    lora_dropout: float = _field(0.05, "lora", "Dropout on the LoRA input, 0 <= value < 1.")
    target_modules: Union[Literal["auto"], list[str]] = _field(
        "auto", "lora",
        "Modules that get adapters: a list of names (e.g. [\"q_proj\", \"v_proj\"]), or "
        "\"auto\" = every linear projection of the architecture except the LM head.")
    use_4bit: bool = _field(
        False, "lora", "Load the base model in 4-bit NF4 (bitsandbytes; needs a CUDA GPU).")

    # --- optimisation -------------------------------------------------------------------
    num_train_epochs: float = _field(
        1.0, "optimisation", "Passes over the data (> 0, at most 10000).")
    max_steps: int = _field(
        -1, "optimisation", "Stop after this many optimizer steps; -1 = run the epochs.")
    per_device_train_batch_size: int = _field(4, "optimisation", "Examples per step (>= 1).")
    gradient_accumulation_steps: int = _field(
        1, "optimisation", "Steps whose gradients add up before one update (>= 1).")
    learning_rate: float = _field(2e-4, "optimisation", "Peak learning rate, 0 < lr <= 1.")
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
        "constant_with_warmup", "inverse_sqrt"] = _field(
        "linear", "optimisation", "How the learning rate changes over the run.")
    warmup_ratio: float = _field(
        0.0, "optimisation", "Fraction of the steps spent warming the learning rate up, 0..1.")
    weight_decay: float = _field(0.0, "optimisation", "AdamW weight decay (>= 0).")
    max_grad_norm: float = _field(1.0, "optimisation", "Gradient clipping norm (> 0).")
    optim: Literal[
        "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit",
        "paged_adamw_32bit", "adafactor", "sgd"] = _field(
        "adamw_torch", "optimisation",
        "Optimizer. The 8-bit ones (adamw_8bit, paged_adamw_8bit) need bitsandbytes and CUDA.")
    bf16: bool = _field(False, "optimisation", "Train in bfloat16 mixed precision.")
    fp16: bool = _field(False, "optimisation", "Train in float16 mixed precision.")
    gradient_checkpointing: bool = _field(
        False, "optimisation", "Recompute activations in the backward pass: less memory, ~20% slower.")
    speed_mode: bool = _field(
        False, "optimisation",
        "Decide at start, for the GPU the run gets, the fastest settings that fit: padding-free "
        "batches (sft/qlora), gradient checkpointing off and the largest micro-batch the VRAM "
        "estimate says fits (gradient accumulation keeps the effective batch), per-row "
        "attention, Liger kernels and PyTorch's expandable segments for huggingface, cuDNN "
        "attention off. The decisions are shown with the run (trainers/speed.py).")
    liger_kernel: bool = _field(
        False, "optimisation",
        "huggingface: Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE, fused linear "
        "cross-entropy); needs a CUDA GPU and `pip install liger-kernel`.")
    fused_lora: bool = _field(
        False, "optimisation",
        "huggingface, 16-bit LoRA: a leaner LoRA layer forward under bf16/fp16 mixed "
        "precision: the input stays in the model's dtype (PEFT copies it to the adapter's "
        "float32 and autocast copies it back) and the LoRA branch is added inside its "
        "up-projection's GEMM, not by a separate multiply and add. The same sum, rounded once; "
        "Llama-3.1-8B on an H100: +17% tokens/s. speed_mode turns it on "
        "(trainers/train/fused_lora.py).")
    attention: Literal["sdpa", "sdpa_per_row"] = _field(
        "sdpa", "optimisation",
        "huggingface: how attention runs. sdpa: PyTorch's scaled_dot_product_attention over "
        "the batch; with padding_free, transformers keeps the rows apart with a mask over all "
        "the micro-batch's tokens, so attention grows with the square of their total. "
        "sdpa_per_row: each row attends only to itself, causal and without a mask: on an Ampere "
        "or newer GPU in bf16/fp16 one varlen flash-attention call per layer for all rows, "
        "elsewhere SDPA once per row; needs padding_free. Llama-3.1-8B on an H200: +42% "
        "tokens/s and 4 GiB less than sdpa; speed_mode switches it on "
        "(trainers/train/attention.py).")
    seed: int = _field(
        42, "optimisation", "Random seed for data order and adapter init (0 to 2**32 - 1).")

    # --- preference training ------------------------------------------------------------
    beta: float = _field(
        0.1, "advanced", "dpo: strength of the pull towards the reference model (> 0); "
        "rlhf: KL penalty coefficient of the policy stage (>= 0).")
    dpo_loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = _field(
        "sigmoid", "advanced", "dpo: the preference loss (sigmoid is the DPO paper's).")
    max_prompt_length: int = _field(
        512, "advanced", "dpo/rlhf: prompts are cut to this many tokens (from the left). Left "
        "unset, it is 512, or half of max_seq_length when 512 would leave fewer than 16 tokens "
        "for the answers.")
    reward_model_steps: int = _field(
        -1, "advanced", "rlhf: optimizer steps of the reward-model stage; -1 = one epoch.")
    max_new_tokens: int = _field(
        64, "advanced", "rlhf: longest generated completion in the policy stage (tokens).")
    num_generations: int = _field(
        4, "advanced", "rlhf: completions sampled per prompt in the policy stage (>= 2). Left "
                       "unset, it is 4, or 2 when 4 does not divide per_device_train_batch_size x "
                       "gradient_accumulation_steps.")

    # --- several GPUs -------------------------------------------------------------------
    num_processes: int = _field(
        1, "advanced",
        "Processes (one GPU each) that train together, at most the server's GPUs (or CPU "
        "cores without GPUs). Above 1 the worker is launched with torchrun; each process sees "
        "a share of every batch (data parallel).")
    distributed_strategy: Literal["ddp", "fsdp"] = _field(
        "ddp", "advanced",
        "With num_processes > 1: ddp keeps a full model copy per GPU; fsdp shards the model "
        "across the GPUs, for models that do not fit on one (huggingface provider, 16-bit).")

    # --- output and logging -------------------------------------------------------------
    logging_steps: int = _field(1, "advanced", "Emit a progress event every N steps (>= 1).")
    save_steps: int = _field(
        0, "advanced",
        "Save a checkpoint (adapter, optimizer, scheduler and trainer state) every N steps; "
        "0 = only the final adapter. A graceful stop saves one too, so a stopped run can resume.")
    report_to: list[Literal["tensorboard", "trackio", "wandb", "mlflow"]] = _field(
        [], "advanced",
        "Experiment trackers that also receive the logged metrics, as transformers takes them: "
        "one name, a list ([\"tensorboard\", \"wandb\"] logs to both) or \"none\". "
        "tensorboard writes event files into the run directory; wandb without a login runs "
        "offline; mlflow without MLFLOW_TRACKING_URI writes local files. Each one's package "
        "must be installed.")
    resume_from: str = _field(
        "", "advanced",
        "Id of an earlier run (stopped, failed or interrupted) whose last checkpoint this run "
        "continues: the same step count, learning-rate schedule and data order, in a new run "
        "directory. Empty = a fresh start. Set by Resume in the Runs tab.")
    output_dir: str = _field(
        "", "advanced",
        "Where the adapter goes: a new or empty folder that no other run and no model uses; "
        "empty = the run's own directory.", path="dir")
    name: str = _field("", "advanced", "A label for the run in the history; empty = automatic.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers_as_list(cls, value: Any) -> Any:
        """transformers' forms: "none", one name, or a list of names."""
        from trainers.tracking import tracker_list

        return tracker_list(value)

    @model_validator(mode="before")
    @classmethod
    def _qlora_means_4bit(cls, data: Any) -> Any:
        """`strategy: qlora` turns 4-bit on; an explicit `use_4bit: false` beside it is an error."""
        if isinstance(data, dict) and data.get("strategy") == "qlora" and "use_4bit" not in data:
            data = {**data, "use_4bit": True}
        return data

    @model_validator(mode="before")
    @classmethod
    def _adaptive_defaults(cls, data: Any) -> Any:
        """A default the user did not set adapts to the values they did set (only an explicit
        conflict is an error): max_prompt_length becomes half of a short max_seq_length;
        num_generations the largest of NUM_GENERATIONS_CHOICES that divides the completions
        per step."""
        if not isinstance(data, dict) or data.get("strategy") not in ("dpo", "rlhf"):
            return data
        given = cls.model_fields
        seq = data.get("max_seq_length", given["max_seq_length"].default)
        if "max_prompt_length" not in data and type(seq) is int and seq >= 16 \
                and given["max_prompt_length"].default > seq - 16:
            data = {**data, "max_prompt_length": seq // 2}
        batch, accum = (data.get(name, given[name].default) for name in (
            "per_device_train_batch_size", "gradient_accumulation_steps"))
        if data["strategy"] == "rlhf" and "num_generations" not in data \
                and type(batch) is int and type(accum) is int:
            fits = [n for n in NUM_GENERATIONS_CHOICES if (batch * accum) % n == 0]
            if fits:  # none fits an odd count: the default stays, and the rule says the fix
                data = {**data, "num_generations": fits[0]}
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> "TrainConfig":
        problems = config_problems(self)
        if problems:
            raise ConfigError(problems)
        return self


def _problem(field: str, message: str) -> dict:
    return {"field": field, "message": message}


# Each rule: (field, check that returns True when fine, message that says the fix).
_RANGE_RULES = [
    ("lora_r", lambda c: c.lora_r >= 1, "must be at least 1: set lora_r to 8, 16 or 64"),
    ("lora_alpha", lambda c: c.lora_alpha > 0, "must be greater than 0: a common choice is 2 x lora_r"),
    ("lora_dropout", lambda c: 0 <= c.lora_dropout < 1,
     "must be at least 0 and below 1: use 0 to 0.1"),
    ("learning_rate", lambda c: 0 < c.learning_rate <= 1,
     "must be greater than 0 and at most 1: LoRA usually uses 1e-4 to 3e-4"),
    ("per_device_train_batch_size", lambda c: c.per_device_train_batch_size >= 1,
     "must be at least 1"),
    ("gradient_accumulation_steps", lambda c: c.gradient_accumulation_steps >= 1,
     "must be at least 1"),
    ("eval_split", lambda c: 0 <= c.eval_split < 1,
     "must be at least 0 and below 1: use 0 for no evaluation or e.g. 0.1 to hold out 10%"),
    ("max_seq_length",
     lambda c: c.max_seq_length == -1 or 16 <= c.max_seq_length <= MAX_SEQ_LENGTH,
     f"must be -1 (infer from the data) or at least 16 and at most {MAX_SEQ_LENGTH}: common "
     "values are 512, 1024, 2048, 4096"),
    ("num_train_epochs", lambda c: 0 < c.num_train_epochs <= MAX_EPOCHS,
     f"must be greater than 0 and at most {MAX_EPOCHS}: e.g. 3, or set max_steps instead"),
    ("max_steps", lambda c: c.max_steps == -1 or 1 <= c.max_steps <= MAX_STEPS,
     f"must be -1 (run the epochs) or from 1 to {MAX_STEPS:,}"),
    ("warmup_ratio", lambda c: 0 <= c.warmup_ratio <= 1, "must be between 0 and 1"),
    ("weight_decay", lambda c: c.weight_decay >= 0, "must be at least 0"),
    ("max_grad_norm", lambda c: c.max_grad_norm > 0, "must be greater than 0"),
    ("padding_free", lambda c: not c.padding_free or c.strategy in ("sft", "qlora"),
     "applies to sft and qlora: set it to false for dpo and rlhf"),
    ("padding_free", lambda c: not (c.padding_free and c.packing),
     "packing already concatenates rows without padding: turn one of them off"),
    ("logging_steps", lambda c: c.logging_steps >= 1, "must be at least 1"),
    ("save_steps", lambda c: c.save_steps >= 0, "must be 0 (final adapter only) or a step count"),
    ("eval_steps", lambda c: c.eval_steps >= 0,
     "must be 0 (every 10 x logging_steps) or a step count, e.g. 50"),
    ("beta", lambda c: c.beta >= 0 if c.strategy == "rlhf" else c.beta > 0,
     "must be greater than 0 for dpo (e.g. 0.1), at least 0 for rlhf"),
    ("max_prompt_length", lambda c: c.max_prompt_length >= 1, "must be at least 1"),
    ("max_new_tokens", lambda c: c.max_new_tokens >= 1, "must be at least 1"),
    ("num_generations", lambda c: c.num_generations >= 2,
     "must be at least 2: GRPO compares completions of the same prompt"),
    ("num_processes", lambda c: 1 <= c.num_processes <= MAX_PROCESSES,
     f"must be at least 1 and at most {MAX_PROCESSES} (the number of GPUs the run trains on)"),
    ("seed", lambda c: 0 <= c.seed <= MAX_SEED,
     f"must be from 0 to {MAX_SEED} (2**32 - 1): e.g. 42"),
    ("target_modules", lambda c: c.target_modules == "auto" or len(c.target_modules) > 0,
     "must be \"auto\" or a non-empty list of module names such as [\"q_proj\", \"v_proj\"]"),
]


def field_problems(values: BaseModel, names) -> list[dict]:
    """The rules of TrainConfig's fields `names`, on any model that has those fields (the
    benchmark spec takes some of them from here), each problem with its fix."""
    # 1e999 in JSON and .inf in YAML read as infinity, and NaN slips past every comparison
    infinite = [name for name in names if isinstance(getattr(values, name), float)
                and not math.isfinite(getattr(values, name))]
    problems = [_problem(name, f"got {getattr(values, name)}; must be a finite number, e.g. the "
                               f"default {type(values).model_fields[name].default}")
                for name in infinite]
    problems += [_problem(f, msg) for f, ok, msg in _RANGE_RULES
                 if f in names and f not in infinite and not ok(values)]
    reported = {p["field"] for p in problems}  # a field's own range says more than this
    huge = [name for name in names if type(getattr(values, name)) is int
            and abs(getattr(values, name)) > MAX_INT and name not in reported]
    return problems + [_problem(name, f"is a number of {len(str(abs(getattr(values, name))))} "
                                      f"digits, too large to use: at most {MAX_INT} (2**53), "
                                      f"e.g. the default "
                                      f"{type(values).model_fields[name].default}")
                       for name in huge]


def config_problems(cfg: TrainConfig) -> list[dict]:
    """Every rule the field types alone do not express, each with its fix."""
    problems = field_problems(cfg, list(TrainConfig.model_fields))
    if cfg.bf16 and cfg.fp16:
        problems.append(_problem(
            "bf16", "bf16 and fp16 cannot both be on: keep bf16 (Ampere or newer GPUs) "
                    "or fp16 (older GPUs), not both"))
    if cfg.strategy == "qlora" and not cfg.use_4bit:
        problems.append(_problem(
            "use_4bit", "strategy qlora trains on a 4-bit base model: set use_4bit to true, "
                        "or use strategy sft for a 16-bit LoRA"))
    if cfg.liger_kernel and cfg.provider != "huggingface":  # the benchmark spec shares the field
        problems.append(_problem(
            "liger_kernel", "applies to the huggingface provider (Unsloth has its own fused "
                            "kernels): set it to false"))
    if cfg.fused_lora and cfg.provider != "huggingface":
        problems.append(_problem(
            "fused_lora", "applies to the huggingface provider (Unsloth runs its own LoRA "
                          "kernels): set it to false"))
    if cfg.fused_lora and cfg.use_4bit:
        problems.append(_problem(
            "fused_lora", "fuses 16-bit LoRA layers, and use_4bit is on (PEFT's bitsandbytes "
                          "LoRA layers keep their own forward): set fused_lora to false"))
    if cfg.provider == "unsloth" and cfg.max_seq_length == -1:
        problems.append(_problem(
            "max_seq_length", "max_seq_length cannot be -1 with the unsloth provider: "
                              "set a fixed value such as 2048"))
    return problems + preference_problems(cfg) + run_feature_problems(cfg) + \
        attention_problems(cfg)


def attention_problems(cfg: TrainConfig) -> list[dict]:
    """What sdpa_per_row needs of the rest of the config. Not in _RANGE_RULES: the benchmark
    spec shares the attention field and applies those rules, and it has no provider field."""
    if cfg.attention == "sdpa":
        return []
    problems = []
    if cfg.provider != "huggingface":
        problems.append(_problem(
            "attention", f"{cfg.attention} applies to the huggingface provider (Unsloth picks "
                         "its own attention): set attention to sdpa"))
    # speed_mode turns padding_free on where padding_free is allowed (trainers/speed.py)
    padding_free_at_start = cfg.padding_free or (
        cfg.speed_mode and cfg.strategy in ("sft", "qlora") and not cfg.packing)
    if not padding_free_at_start:
        problems.append(_problem(
            "attention", f"{cfg.attention} needs padding-free batches (padded rows would need "
                         "the mask it leaves out): set padding_free to true (sft and qlora), or "
                         "set attention to sdpa"))
    return problems


def run_feature_problems(cfg: TrainConfig) -> list[dict]:
    """Evaluation, tracking and resuming: what each needs of the rest of the config."""
    from trainers.tracking import tracker_problems

    problems = []
    if cfg.eval_steps > 0 and cfg.eval_split == 0:
        problems.append(_problem(
            "eval_steps", "evaluates held-out data, and eval_split is 0: set eval_split "
                          "(e.g. 0.1 holds out 10%), or set eval_steps to 0"))
    if cfg.resume_from:
        if not RUN_ID_PATTERN.fullmatch(cfg.resume_from):
            problems.append(_problem(
                "resume_from", f"got {cfg.resume_from[:80]!r}, which is not a run id: give the "
                               "id of an earlier run (e.g. 20260101-120000-abc123), or leave it "
                               "empty"))
        if cfg.strategy == "rlhf":
            problems.append(_problem(
                "resume_from", "rlhf runs (two stages) cannot be resumed: start a new run, or "
                               "leave resume_from empty"))
    return problems + tracker_problems(cfg.report_to)


def preference_problems(cfg: TrainConfig) -> list[dict]:
    """dpo/rlhf: the prompt must leave room for the answers; GRPO groups must fill a batch."""
    problems = []
    if cfg.strategy in ("dpo", "rlhf") and cfg.max_seq_length != -1 and \
            cfg.max_prompt_length > cfg.max_seq_length - 16:
        problems.append(_problem(
            "max_prompt_length", f"{cfg.max_prompt_length} leaves fewer than 16 of max_seq_length "
                                 f"({cfg.max_seq_length}) tokens for the answers: lower it (e.g. "
                                 f"to {cfg.max_seq_length // 2}) or raise max_seq_length"))
    completions = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if cfg.strategy == "rlhf" and completions % cfg.num_generations:
        problems.append(_problem(
            "num_generations", f"per_device_train_batch_size x gradient_accumulation_steps "
                               f"({completions}) completions per step must be a multiple of "
                               f"num_generations ({cfg.num_generations}): each prompt's "
                               f"{cfg.num_generations} completions are scored as one group; "
                               f"e.g. set per_device_train_batch_size to {cfg.num_generations}"))
    if cfg.num_processes > 1 and cfg.distributed_strategy == "fsdp":
        if cfg.use_4bit:
            problems.append(_problem(
                "distributed_strategy", "fsdp cannot shard a 4-bit (bitsandbytes) model here: "
                                        "use ddp, or set use_4bit false"))
        if cfg.provider == "unsloth":
            problems.append(_problem(
                "distributed_strategy", "fsdp is not available with the unsloth provider in "
                                        "ModelForge: use ddp (Unsloth supports it under torchrun) "
                                        "or provider huggingface"))
    if cfg.num_processes > 1 and cfg.strategy == "rlhf":
        problems.append(_problem(
            "num_processes", "rlhf runs on one GPU: set num_processes to 1"))
    return problems


# --- the fields other schemas share -------------------------------------------------------

def config_field(name: str, note: str = "") -> Any:
    """TrainConfig's field `name` as the type of a field in another schema (the benchmark spec,
    the preview request): the same type, description (`note` appended) and path mark; not its
    place in the dashboard form. That schema sets its own default and applies field_problems."""
    field = TrainConfig.model_fields[name]
    marks = {k: v for k, v in (field.json_schema_extra or {}).items() if k != "group"}
    return Annotated[field.annotation, Field(description=f"{field.description} {note}".strip(),
                                             json_schema_extra=marks or None)]


def path_fields(schema: type[BaseModel] = TrainConfig) -> dict[str, str]:
    """name -> "file" | "model" | "dir" for each field the schema marks as a path."""
    marks = {name: info.json_schema_extra for name, info in schema.model_fields.items()}
    return {name: extra["path"] for name, extra in marks.items()
            if isinstance(extra, dict) and extra.get("path")}


# --- presets ---------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    "optimal": {
        "strategy": "qlora", "use_4bit": True, "bf16": True, "gradient_checkpointing": True,
        "per_device_train_batch_size": 8, "gradient_accumulation_steps": 4,
        "lora_r": 64, "lora_alpha": 16, "lora_dropout": 0.1, "max_seq_length": 2048,
    },
    "memory": {
        "max_seq_length": 1024, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 8, "gradient_checkpointing": True, "use_4bit": True,
    },
    "speed": {  # speed_mode picks padding-free, checkpointing and the micro-batch at start
        "max_seq_length": 2048, "per_device_train_batch_size": 16,
        "gradient_accumulation_steps": 1, "bf16": True, "optim": "adamw_8bit",
        "speed_mode": True,
    },
}


# --- building configs, with plain messages ---------------------------------------------------

def field_names() -> list[str]:
    return list(TrainConfig.model_fields)


# Fields whose default adapts to the others (TrainConfig._adaptive_defaults): a form that shows
# the default leaves them out unless the user changed them.
ADAPTIVE_DEFAULTS = ("max_prompt_length", "num_generations")


_REQUEST_PARTS = ("body", "query", "path", "header")  # where FastAPI says an error sits


def plain_problem(err: dict, valid_fields: list[str] | None = None,
                  where: str = "the config") -> dict:
    """One pydantic error as {field, message}: a sentence that names the field and the fix.

    Shared by the config schema, the benchmark spec and the REST API, so the same mistake reads
    the same everywhere. `valid_fields` lists what an unknown field could have been.
    """
    loc = [str(p) for p in err.get("loc", ()) if p not in _REQUEST_PARTS]
    field = ".".join(loc) or "config"
    kind, given = err.get("type", ""), repr(err.get("input"))[:100]
    if kind == "extra_forbidden":
        msg = f"unknown field '{field}'."
        if valid_fields:
            close = difflib.get_close_matches(field, valid_fields, n=1)
            msg += (f" Did you mean '{close[0]}'?" if close else "") + \
                " Valid fields are: " + ", ".join(valid_fields)
    elif kind == "missing":
        msg = f"is required: add \"{field}\" to {where}"
    elif kind == "json_invalid":
        msg = f"is not valid JSON: {err.get('ctx', {}).get('error', '')}"
    elif kind == "literal_error":
        msg = f"got {given}; allowed values are {err.get('ctx', {}).get('expected', '')}"
    else:
        msg = f"got {given}, which is not valid here: {str(err.get('msg', '')).lower()}"
    return _problem(loc[0] if loc else field, msg)


def _problems_from_validation_error(exc: ValidationError) -> list[dict]:
    problems: list[dict] = []
    listed = False  # the valid fields are listed once, with the first unknown key
    for err in exc.errors():
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, ConfigError):
            problems.extend(inner.problems)
            continue
        unknown = err.get("type") == "extra_forbidden"
        problem = plain_problem(err, field_names() if unknown and not listed else None)
        if unknown and listed:
            close = difflib.get_close_matches(problem["field"], field_names(), n=1)
            problem["message"] += (f" Did you mean '{close[0]}'?" if close else
                                   " See the valid fields above.")
        listed = listed or unknown
        problems.append(problem)
    return problems


# A stand-in for a required field that is missing or invalid, so the rules can still be judged.
_PLACEHOLDERS = {"model_name": "model", "dataset": "data.jsonl"}


def _rule_problems_beside(merged: dict, problems: list[dict]) -> list[dict]:
    """The rule violations of the fields that did parse, when others did not (an unknown key,
    a wrong type): every problem is reported at once instead of one fix later. A rule about a
    field already reported is left out (its value here would be the default, not the user's)."""
    bad = {p["field"] for p in problems}
    rest = {k: v for k, v in merged.items() if k in TrainConfig.model_fields and k not in bad}
    for name, placeholder in _PLACEHOLDERS.items():
        rest.setdefault(name, placeholder)
    try:
        TrainConfig(**rest)
    except ConfigError as exc:
        return [p for p in exc.problems if p["field"] not in bad]
    except ValidationError as exc:  # a value that only fails beside the others
        return [p for p in _problems_from_validation_error(exc) if p["field"] not in bad]
    return []


def holds_default(name: str, value: Any) -> bool:
    """Whether `value` is field `name`'s default (a config written with every field filled in
    holds many): such a value does not beat a preset's."""
    field = TrainConfig.model_fields.get(name)
    return field is not None and not field.is_required() and \
        value == field.get_default(call_default_factory=True)


def _beats_preset(name: str, value: Any, keep: Iterable[str]) -> bool:
    return name in keep or not holds_default(name, value)


def preset_overrides(data: dict[str, Any], preset: str | None,
                     keep: Iterable[str] = ()) -> list[str]:
    """The preset's fields that `data` sets to a value of its own (not the default, or named
    in `keep`), which win over the preset, as "name = value (preset: value)"; said to the
    user, never silent."""
    if not preset or preset not in PRESETS or not isinstance(data, dict):
        return []
    return [f"{k} = {data[k]!r} (preset: {v!r})" for k, v in PRESETS[preset].items()
            if k in data and data[k] != v and _beats_preset(k, data[k], keep)]


def preset_note(data: dict[str, Any], preset: str | None, keep: Iterable[str] = ()) -> str:
    """One sentence naming the preset's fields the config overrides, or ''."""
    overrides = preset_overrides(data, preset, keep)
    if not overrides:
        return ""
    return (f"your own values beat preset '{preset}' for: {'; '.join(overrides)} "
            "(leave them out to take the preset's)")


def build_config(data: dict[str, Any], preset: str | None = None,
                 keep: Iterable[str] = ()) -> TrainConfig:
    """Validate a dict (preset values first; the dict's own values override them, except a
    value that only repeats a field's default and is not named in `keep`, the fields the user
    set explicitly, as with --set: see preset_note).

    Raises ConfigError listing every problem; never returns a half-valid config.
    """
    if not isinstance(data, dict):
        raise ConfigError([_problem("config", "must be a JSON/YAML object of field: value pairs")])
    merged: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError([_problem(
                "preset", f"unknown preset '{preset}': choose one of {', '.join(PRESETS)}")])
        merged.update(PRESETS[preset])
        data = {k: v for k, v in data.items() if k not in merged or _beats_preset(k, v, keep)}
    merged.update(data)
    try:
        return TrainConfig(**merged)
    except ValidationError as exc:
        problems = _problems_from_validation_error(exc)
        raise ConfigError(problems + _rule_problems_beside(merged, problems)) from None
    except ConfigError:
        raise


def check_config(data: dict[str, Any], preset: str | None = None) -> list[dict]:
    """All problems of a config dict, or [] when it is valid (for the config checker)."""
    try:
        build_config(data, preset)
    except ConfigError as exc:
        return exc.problems
    return []


def parse_cli_value(text: str) -> Any:
    """`--set key=value`: the value is read as JSON when it parses (numbers, true, lists)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def absolute_if_local(value: str) -> str:
    """A path that exists here becomes absolute (workers run in their own run directory, so a
    relative path would point somewhere else); hub ids and other strings stay as they are."""
    if not value:
        return value
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def with_absolute_paths(raw: dict[str, Any], schema: type[BaseModel] = TrainConfig) -> dict:
    """The config (or spec) dict with the local paths of its path fields made absolute,
    relative to the current directory. An output folder ("dir") need not exist yet."""
    def absolute(value: Any, kind: str) -> Any:
        if not isinstance(value, str) or not value:
            return value
        return str(Path(value).expanduser().resolve()) if kind == "dir" \
            else absolute_if_local(value)

    fixed = dict(raw)
    for key, kind in path_fields(schema).items():
        if key not in fixed:
            continue
        value = fixed[key]  # a list: the values of a sweep (trainers/runs/sweep.py)
        fixed[key] = [absolute(v, kind) for v in value] if isinstance(value, list) \
            else absolute(value, kind)
    return fixed


# --- files ---------------------------------------------------------------------------------

def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([_problem("config", f"config file {path} does not exist")])
    text = path.read_text(encoding="utf-8")
    return parse_config_text(text, yaml_syntax=path.suffix.lower() in (".yaml", ".yml"))


def parse_config_text(text: str, yaml_syntax: bool | None = None) -> dict[str, Any]:
    """Parse JSON or YAML text (auto-detected when `yaml_syntax` is None)."""
    import yaml

    stripped = text.strip()
    if yaml_syntax is None:
        yaml_syntax = not stripped.startswith("{")
    try:
        data = yaml.safe_load(stripped) if yaml_syntax else json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise ConfigError([_problem(
            "config", f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")])
    except yaml.YAMLError as exc:
        raise ConfigError([_problem("config", f"is not valid YAML: {exc}")])
    if not isinstance(data, dict):
        raise ConfigError([_problem("config", "must be an object of field: value pairs")])
    return data


def config_to_text(cfg: TrainConfig, fmt: str = "json") -> str:
    import yaml

    data = cfg.model_dump(mode="json")
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    path = Path(path)
    fmt = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"
    path.write_text(config_to_text(cfg, fmt), encoding="utf-8")
