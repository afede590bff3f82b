"""Plain Hugging Face: transformers + peft + bitsandbytes. This process never imports unsloth."""

from __future__ import annotations

from trainers.config import TrainConfig
from trainers.errors import ProviderError
from trainers.train.providers.base import (Provider, check_cuda_features, is_encoder_decoder,
                                           load_model_config, resolve_target_modules)

TORCH_LM_HEAD = "pytorch (no GPU: TRL's Triton kernel replaced, see trl_cpu.py)"


class HuggingFaceProvider(Provider):
    name = "huggingface"

    def check(self, cfg: TrainConfig) -> None:
        check_cuda_features(cfg)
        model_config = load_model_config(cfg.model_name, cfg.trust_remote_code)
        self.info["seq2seq"] = is_encoder_decoder(model_config)
        if self.info["seq2seq"] and cfg.strategy in ("dpo", "rlhf"):
            raise ProviderError(
                f"Strategy {cfg.strategy} needs a decoder-only (causal) language model; "
                f"{cfg.model_name} is an encoder-decoder.",
                "Use strategy sft for T5/BART-style models, or pick a causal LM for "
                "preference training.")
        if self.info["seq2seq"] and cfg.attention != "sdpa":
            raise ProviderError(
                f"attention {cfg.attention} runs causal attention per packed row; "
                f"{cfg.model_name} is an encoder-decoder.", "Set attention to sdpa.")

    def load_model(self, cfg: TrainConfig):
        from peft import LoraConfig, get_peft_model

        model_config = load_model_config(cfg.model_name, cfg.trust_remote_code)
        seq2seq = is_encoder_decoder(model_config)
        if cfg.attention == "sdpa_per_row":
            from trainers.train.attention import register

            register()  # transformers checks the name when the model loads
        model = self.load_pretrained(self.model_class(model_config), cfg,
                                     attn_implementation=cfg.attention)
        if cfg.gradient_checkpointing and not cfg.use_4bit:  # k-bit preparation turned it on
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=resolve_target_modules(cfg, model), bias="none",
                          task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM")
        from transformers import set_seed

        set_seed(cfg.seed)  # the adapter's random init follows the run's seed (unsloth's too)
        model = get_peft_model(model, lora)
        if cfg.fused_lora:
            from trainers.train.fused_lora import fuse_lora_layers

            fuse_lora_layers(model)
        trainable, total = model.get_nb_trainable_parameters()
        self.info.update({
            "architecture": model_config.architectures[0] if model_config.architectures else
            model_config.model_type,
            "seq2seq": seq2seq,
            "attention": getattr(model.config, "_attn_implementation", cfg.attention),
            "quantization": "bnb-nf4 (double quant)" if cfg.use_4bit else None,
            "dtype": str(self.dtype(cfg)).replace("torch.", ""),
            "target_modules": sorted(lora.target_modules),
            "trainable_parameters": trainable, "total_parameters": total,
        })
        return model

    def apply_process_fixes(self) -> dict:
        """TRL's fused LM head is Triton-only: without a GPU, swap in the PyTorch one."""
        from trainers.train.trl_cpu import use_torch_lm_head_without_gpu

        return {"trl_lm_head": TORCH_LM_HEAD} if use_torch_lm_head_without_gpu() else {}
