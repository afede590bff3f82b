"""Strategies build TRL trainers from the config and a provider's model. No hand-written loops.

Each strategy module has `run(ctx) -> dict`: it trains, saves the adapter, and returns the
final metrics for the `finished` event.
"""

from __future__ import annotations


def get_strategy(name: str):
    if name in ("sft", "qlora"):  # qlora is sft on a 4-bit base (the provider quantizes)
        from trainers.train.strategies import sft

        return sft
    if name == "dpo":
        from trainers.train.strategies import dpo

        return dpo
    if name == "rlhf":
        from trainers.train.strategies import rlhf

        return rlhf
    raise ValueError(f"unknown strategy {name!r}")
