"""Training arguments every TRL config shares, taken from TrainConfig in one place."""

from __future__ import annotations

from trainers.config import TrainConfig


def common_training_args(cfg: TrainConfig, output_dir: str, has_eval: bool) -> dict:
    """Keyword arguments valid for SFTConfig, DPOConfig, RewardConfig and GRPOConfig."""
    import torch

    save = cfg.save_steps > 0
    return dict(
        output_dir=output_dir,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=min(cfg.warmup_ratio, 0.999),  # a float below 1 is a ratio
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        # without a GPU transformers refuses bf16 unless told the run is on the CPU, where it
        # trains under CPU autocast (Unsloth's CPU backend sets this too)
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        use_liger_kernel=cfg.liger_kernel,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if save else "no",
        save_steps=cfg.save_steps if save else 500,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_interval(cfg) if has_eval else None,
        report_to=cfg.report_to or "none",  # no tracker, said explicitly
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        **distributed_args(cfg),
    )


def eval_interval(cfg: TrainConfig) -> int:
    """Steps between evaluations: eval_steps, or 10 x logging_steps (at least 10) when 0."""
    return cfg.eval_steps or max(cfg.logging_steps * 10, 10)


def distributed_args(cfg: TrainConfig) -> dict:
    """DDP or FSDP settings when the run has several processes (torchrun sets the ranks)."""
    if cfg.num_processes <= 1:
        return {}
    if cfg.distributed_strategy == "ddp":
        # LoRA leaves most parameters frozen; all trainable ones get gradients every step.
        return {"ddp_find_unused_parameters": False}
    return {"fsdp": "full_shard auto_wrap",
            "fsdp_config": {"use_orig_params": True, "activation_checkpointing": False}}
