"""Supervised fine-tuning (and QLoRA): TRL's SFTTrainer on pre-tokenized examples.

Examples are tokenized once by trainers.data (input_ids + completion_mask), so the token counts
the preview shows are the ones that train, and both providers see identical inputs.
Encoder-decoder models (T5, BART) train with transformers' Seq2SeqTrainer instead.
"""

from __future__ import annotations

from trainers.train.strategies.common import common_training_args


def run(ctx) -> dict:
    cfg = ctx.cfg
    if ctx.provider.info.get("seq2seq"):
        return _run_seq2seq(ctx)
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**common_training_args(cfg, str(ctx.checkpoint_dir), bool(ctx.eval_rows)),
                     # padding-free rows are not cut again: trainers.data truncated them
                     max_length=None if cfg.padding_free else ctx.max_seq_length,
                     packing=cfg.packing, padding_free=cfg.padding_free,
                     completion_only_loss=cfg.completion_only_loss, dataset_num_proc=None)
    trainer = SFTTrainer(model=ctx.model, args=args, processing_class=ctx.tokenizer,
                         train_dataset=Dataset.from_list(ctx.train_rows),
                         eval_dataset=Dataset.from_list(ctx.eval_rows) if ctx.eval_rows else None,
                         callbacks=[ctx.telemetry])
    return ctx.train_and_save(trainer)


def _run_seq2seq(ctx) -> dict:
    from datasets import Dataset
    from transformers import (DataCollatorForSeq2Seq, Seq2SeqTrainer,
                              Seq2SeqTrainingArguments)

    args = Seq2SeqTrainingArguments(**common_training_args(ctx.cfg, str(ctx.checkpoint_dir),
                                                           bool(ctx.eval_rows)))
    trainer = Seq2SeqTrainer(
        model=ctx.model, args=args, processing_class=ctx.tokenizer,
        train_dataset=Dataset.from_list(ctx.train_rows),
        eval_dataset=Dataset.from_list(ctx.eval_rows) if ctx.eval_rows else None,
        data_collator=DataCollatorForSeq2Seq(ctx.tokenizer, model=ctx.model),
        callbacks=[ctx.telemetry])
    return ctx.train_and_save(trainer)
