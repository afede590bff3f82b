"""Direct preference optimisation: TRL's DPOTrainer on the provider's LoRA model.

The reference model is the same network with the adapter disabled (`ref_model=None` with a PEFT
model; see preference.reference_is_disabled_adapter), so there is no second copy of the weights.
Prompts are cut to max_prompt_length tokens here (TRL 1.15 has no such setting); TRL's collator
cuts prompt + answer to max_seq_length, keeping the start.

Unsloth: `unsloth.PatchDPOTrainer()` is a no-op in 2026.10.9 (its body is `return`) and the CPU
backend does not export it. Importing unsloth first (the worker does) is what patches TRL's
trainers, so the `DPOTrainer` imported here is Unsloth's on a GPU; `trainer_class` in the final
metrics records which class ran.
"""

from __future__ import annotations

from trainers.train.strategies.common import common_training_args
from trainers.train.strategies.preference import (cut_prompts, last_logged,
                                             reference_is_disabled_adapter)

PREFERENCE_METRICS = ("rewards/margins", "rewards/chosen", "rewards/rejected",
                      "rewards/accuracies")


def build_trainer(ctx):
    """The DPOTrainer for this run (separate from `run` so tests can inspect it)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    cfg = ctx.cfg
    train_rows, cut = cut_prompts(ctx.train_rows, ctx.tokenizer, cfg.max_prompt_length,
                                  ctx.max_seq_length)
    eval_rows, _ = cut_prompts(ctx.eval_rows, ctx.tokenizer, cfg.max_prompt_length,
                               ctx.max_seq_length)
    args = DPOConfig(**common_training_args(cfg, str(ctx.checkpoint_dir), bool(eval_rows)),
                     beta=cfg.beta, loss_type=[cfg.dpo_loss_type], max_length=ctx.max_seq_length,
                     dataset_num_proc=None)
    trainer = DPOTrainer(model=ctx.model, ref_model=None, args=args,
                         processing_class=ctx.tokenizer,
                         train_dataset=Dataset.from_list(train_rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         callbacks=[ctx.telemetry])
    ctx.events.emit("stage", name="dpo", pairs=len(trainer.train_dataset),
                    eval_pairs=len(eval_rows), prompts_cut=cut,
                    max_prompt_length=cfg.max_prompt_length,
                    reference=reference_is_disabled_adapter(trainer))
    return trainer


def run(ctx) -> dict:
    ctx.telemetry.stage = "dpo"
    trainer = build_trainer(ctx)
    metrics = ctx.train_and_save(trainer, stage="dpo")
    final = {f"final_{k.replace('/', '_')}": last_logged(trainer, k) for k in PREFERENCE_METRICS}
    return {**metrics, **final, "trainer_class": type(trainer).__module__ + "." +
            type(trainer).__qualname__}
