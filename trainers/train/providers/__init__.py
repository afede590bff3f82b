"""Providers load a model and its tokenizer, attach the LoRA adapter and say what runs.

A provider is small: `check(cfg)` refuses what it cannot do before anything heavy loads,
`load_tokenizer(cfg)` and `load_model(cfg)` return the pieces, `apply_process_fixes()` patches
the process where a library cannot run here as shipped, `load_for_inference` reloads a finished
run, and the `info` dict it fills goes into the run's `started` event. trainers/train/prepare.py
calls them in their one order; strategies (trainers/train/strategies) build the TRL trainers.
"""

from __future__ import annotations

from trainers.train.providers.base import Provider


def get_provider(name: str) -> Provider:
    if name == "huggingface":
        from trainers.train.providers.huggingface import HuggingFaceProvider

        return HuggingFaceProvider()
    if name == "unsloth":
        from trainers.train.providers.unsloth import UnslothProvider

        return UnslothProvider()
    raise ValueError(f"unknown provider {name!r}")
