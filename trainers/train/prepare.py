"""One way to prepare a run, for the training worker and the benchmark alike:

  provider check -> tokenizer -> (the caller's rows, which may decide max_seq_length)
  -> model with its LoRA adapter -> the provider's process fixes.

The order matters: the unsloth provider's check imports unsloth before transformers, TRL or
PEFT load (it patches them on import), and a huggingface run never imports unsloth. The model
loads from a config whose max_seq_length is resolved, never -1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from trainers.config import TrainConfig


@dataclass
class Prepared:
    cfg: TrainConfig  # the run's config with max_seq_length resolved
    provider: Any
    tokenizer: Any
    model: Any  # PEFT model, adapter attached
    fixes: dict  # what the provider patched in this process, for the started event
    model_load_s: float


def prepare(cfg: TrainConfig,
            fit_rows: Callable[[Any, Any], TrainConfig] | None = None,
            tokenizer_from: str | None = None) -> Prepared:
    """Everything a trainer needs but its data and arguments.

    fit_rows(provider, tokenizer) prepares the caller's rows before the model loads and returns
    the config to load it with: max_seq_length resolved, and what else the rows decide (speed
    mode's micro-batch and checkpointing); without it cfg is taken as it is.
    tokenizer_from: a directory to load the tokenizer from instead of the model's.
    """
    from trainers.train.providers import get_provider

    provider = get_provider(cfg.provider)
    provider.check(cfg)
    tokenizer = provider.load_tokenizer(cfg, tokenizer_from)
    cfg = fit_rows(provider, tokenizer) if fit_rows else cfg
    if cfg.max_seq_length < 1:
        raise ValueError(f"max_seq_length {cfg.max_seq_length} was not resolved before the model")
    started = time.perf_counter()
    model = provider.load_model(cfg)
    model_load_s = time.perf_counter() - started
    return Prepared(cfg, provider, tokenizer, model, provider.apply_process_fixes(), model_load_s)
