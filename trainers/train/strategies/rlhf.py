"""RLHF in two stages, both with TRL trainers:

1. reward model: a sequence-classification copy of the base model (one output) with a LoRA
   adapter, trained by TRL's RewardTrainer on the chosen/rejected pairs; saved to
   RUN_DIR/reward_model (adapter + score head, loadable with peft's
   AutoPeftModelForSequenceClassification).
2. policy: the provider's LoRA model optimised online with TRL's GRPOTrainer against that reward
   model: for each prompt it samples num_generations completions (at most max_new_tokens
   tokens), scores them with the reward model, and uses the group-relative advantages; beta > 0
   adds a KL penalty to the reference, the policy with its adapter disabled. The adapter is
   saved to the run's adapter directory.

Why GRPO: trl 1.15 has no PPOTrainer any more; its online trainers are GRPOTrainer and
RLOOTrainer (top level) and experimental ones. GRPO needs no value model (one fewer network to
hold), accepts a sequence-classification model directly as a reward function, works with a PEFT
policy (reference = adapter disabled) and is the online trainer Unsloth patches and supports.

The reward model is always loaded with transformers + peft, for both providers: Unsloth's CPU
backend (2026.10.9) only loads causal LMs, and the reward model is a separate, smaller job whose
speed is not what the provider choice is about. With provider unsloth the policy (stage 2) goes
through Unsloth; the `stage` event of stage 1 says how the reward model was loaded.

A stop request ends the current stage at the next step (the telemetry callback) and skips the
policy stage when it arrives during or after the reward-model stage.
"""

from __future__ import annotations

from trainers.runs.stop_flag import stop_requested
from trainers.tracking import use_stage_logs
from trainers.train.strategies.common import common_training_args
from trainers.train.strategies.preference import (cut_answers, cut_prompts, last_logged,
                                             reference_is_disabled_adapter)

REWARD_MODEL_DIR = "reward_model"
REWARD_MODEL_LOADER = ("transformers AutoModelForSequenceClassification(num_labels=1) + peft "
                       "LoRA (task SEQ_CLS), with the run's dtype and quantization")


def run(ctx) -> dict:
    reward_model, reward_summary = train_reward_model(ctx)
    if stop_requested(ctx.run_dir):
        ctx.telemetry.stopped = True
        ctx.events.emit("stage", name="policy", skipped=True,
                        reason="stop requested after the reward model stage")
        return {**reward_summary, "policy_adapter_saved": False, "stopped_early": True}
    ctx.telemetry.stage = "policy"
    use_stage_logs(ctx.cfg.report_to, ctx.run_dir, "policy")
    trainer = build_policy_trainer(ctx, [reward_model])
    ctx.events.emit("stage", name="policy", trainer="GRPOTrainer",
                    num_generations=ctx.cfg.num_generations,
                    max_new_tokens=ctx.cfg.max_new_tokens, beta=ctx.cfg.beta,
                    prompts=len(trainer.train_dataset),
                    reference=reference_is_disabled_adapter(trainer) if ctx.cfg.beta else None)
    metrics = ctx.train_and_save(trainer, stage="policy")
    return {**reward_summary, **metrics, "policy_adapter_saved": True,
            "final_reward": last_logged(trainer, "reward"), "final_kl": last_logged(trainer, "kl"),
            "trainer_class": type(trainer).__module__ + "." + type(trainer).__qualname__}


# --- stage 1: reward model -------------------------------------------------------------------

def build_reward_trainer(ctx):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    from trainers.train.providers.base import resolve_target_modules

    cfg = ctx.cfg
    set_seed(cfg.seed)  # the new score head is random: same seed, same reward model
    # loaded like the policy (dtype, 4-bit), by transformers for both providers (docstring)
    model = ctx.provider.load_pretrained(AutoModelForSequenceClassification, cfg, num_labels=1)
    model.config.pad_token_id = ctx.tokenizer.pad_token_id  # the score is read before padding
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=resolve_target_modules(cfg, model), bias="none",
                      task_type="SEQ_CLS")  # SEQ_CLS: peft also trains the new `score` head
    train_rows, cut = _fit_pairs(ctx.train_rows, ctx)
    eval_rows, _ = _fit_pairs(ctx.eval_rows, ctx)
    args = common_training_args(cfg, str(ctx.checkpoint_dir / REWARD_MODEL_DIR), bool(eval_rows))
    args.update(max_steps=cfg.reward_model_steps, num_train_epochs=1)
    trainer = RewardTrainer(model=model, args=RewardConfig(**args, max_length=ctx.max_seq_length,
                                                           dataset_num_proc=None),
                            processing_class=ctx.tokenizer, peft_config=lora,
                            train_dataset=Dataset.from_list(train_rows),
                            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                            callbacks=[ctx.telemetry])
    return trainer, {"pairs": len(trainer.train_dataset), "pairs_cut": cut,
                     "pairs_dropped_too_long": len(train_rows) - len(trainer.train_dataset),
                     "target_modules": sorted(lora.target_modules)}


def _fit_pairs(rows, ctx):
    rows, _ = cut_prompts(rows, ctx.tokenizer, ctx.cfg.max_prompt_length, ctx.max_seq_length)
    return cut_answers(rows, ctx.tokenizer, ctx.max_seq_length)


def train_reward_model(ctx):
    """Train and save the reward model; return it (in eval mode) and a summary for the result."""
    ctx.telemetry.stage = "reward_model"
    use_stage_logs(ctx.cfg.report_to, ctx.run_dir, "reward_model")
    save_to = ctx.run_dir / REWARD_MODEL_DIR
    trainer, facts = build_reward_trainer(ctx)
    ctx.events.emit("stage", name="reward_model", trainer="RewardTrainer",
                    loader=REWARD_MODEL_LOADER, provider=ctx.provider.name, path=str(save_to),
                    **facts)
    metrics = ctx.train_and_save(trainer, save_to=save_to, stage="reward_model")
    model = trainer.model.eval()
    return model, {"reward_model_dir": str(save_to),
                   "reward_model_steps": metrics["steps"],
                   "reward_model_loss": metrics["final_loss"],
                   "reward_model_accuracy": last_logged(trainer, "accuracy"),
                   "reward_model_eval_accuracy": last_logged(trainer, "eval_accuracy")}


# --- stage 2: policy ---------------------------------------------------------------------------

def build_policy_trainer(ctx, reward_funcs: list):
    """GRPOTrainer for ctx.model. reward_funcs: reward models and/or python callables."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    cfg = ctx.cfg
    rows, _ = cut_prompts(ctx.train_rows, ctx.tokenizer, cfg.max_prompt_length,
                          ctx.max_seq_length)
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))  # unique, in data order
    args = GRPOConfig(**common_training_args(cfg, str(ctx.checkpoint_dir / "policy"), False),
                      num_generations=cfg.num_generations,
                      max_completion_length=cfg.max_new_tokens, beta=cfg.beta, use_vllm=False)
    # The reward model shares the policy's tokenizer; TRL would reload one from its path.
    tokenizers = [ctx.tokenizer if isinstance(f, torch.nn.Module) else None for f in reward_funcs]
    trainer = GRPOTrainer(model=ctx.model, reward_funcs=reward_funcs, args=args,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                          processing_class=ctx.tokenizer, reward_processing_classes=tokenizers,
                          callbacks=[ctx.telemetry])
    reference_is_disabled_adapter(trainer)
    return trainer

