"""Plain Hugging Face: transformers + peft + bitsandbytes. This process never imports unsloth."""

from __future__ import annotations

import os

from trainers.config import TrainConfig
from trainers.errors import ProviderError
from trainers.train.providers.base import (Provider, check_cuda_features, compute_dtype,
                                     resolve_target_modules)


class HuggingFaceProvider(Provider):
    name = "huggingface"

    def check(self, cfg: TrainConfig) -> None:
        from transformers import AutoConfig

        check_cuda_features(cfg)
        model_config = AutoConfig.from_pretrained(cfg.model_name,
                                                  trust_remote_code=cfg.trust_remote_code)
        self.info["seq2seq"] = bool(getattr(model_config, "is_encoder_decoder", False))
        if self.info["seq2seq"] and cfg.strategy in ("dpo", "rlhf"):
            raise ProviderError(
                f"Strategy {cfg.strategy} needs a decoder-only (causal) language model; "
                f"{cfg.model_name} is an encoder-decoder.",
                "Use strategy sft for T5/BART-style models, or pick a causal LM for "
                "preference training.")

    def load_model(self, cfg: TrainConfig, max_seq_length: int, tokenizer):
        import torch
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(cfg.model_name,
                                                  trust_remote_code=cfg.trust_remote_code)
        seq2seq = bool(getattr(model_config, "is_encoder_decoder", False))
        dtype = compute_dtype(cfg)
        kwargs = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code,
                  "attn_implementation": "sdpa"}
        if cfg.use_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float16 if cfg.fp16 else torch.bfloat16)
            # bitsandbytes places the weights at load time: on this process's own GPU
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
        model = self._auto_class(seq2seq).from_pretrained(cfg.model_name, **kwargs)
        if cfg.use_4bit:
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        elif cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=resolve_target_modules(cfg, model), bias="none",
                          task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM")
        model = get_peft_model(model, lora)
        trainable, total = model.get_nb_trainable_parameters()
        self.info.update({
            "architecture": model_config.architectures[0] if model_config.architectures else
            model_config.model_type,
            "seq2seq": seq2seq,
            "attention": getattr(model.config, "_attn_implementation", "sdpa"),
            "quantization": "bnb-nf4 (double quant)" if cfg.use_4bit else None,
            "dtype": str(dtype).replace("torch.", ""),
            "target_modules": sorted(lora.target_modules),
            "trainable_parameters": trainable, "total_parameters": total,
        })
        return model

    @staticmethod
    def _auto_class(seq2seq: bool):
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
