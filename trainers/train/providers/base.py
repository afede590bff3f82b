"""What every provider shares: how transformers loads a run's weights (dtype, 4-bit), the model
class, reloading a finished run, target-module resolution and device facts."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

from trainers.config import TrainConfig
from trainers.errors import EnvironmentProblem


class Provider(ABC):
    name = "base"

    def __init__(self) -> None:
        self.info: dict = {"provider": self.name}

    def check(self, cfg: TrainConfig) -> None:
        """Raise a typed error for what this provider cannot do, before heavy imports."""

    def load_tokenizer(self, cfg: TrainConfig, source: str | None = None):
        """The model's tokenizer, or the one in `source` (a directory) when given."""
        return load_tokenizer(source or cfg.model_name, cfg.trust_remote_code)

    @abstractmethod
    def load_model(self, cfg: TrainConfig):
        """Return a PEFT model with the LoRA adapter attached (trainable), ready for a trainer.

        cfg.max_seq_length is resolved (never -1): trainers/train/prepare.py sees to it."""

    def apply_process_fixes(self) -> dict:
        """Patch this process where a library cannot run here as shipped (after the model
        loads); return what was patched, for the `started` event."""
        return {}

    def dtype(self, cfg: TrainConfig):
        """The dtype the run trains in."""
        import torch

        if cfg.bf16:
            return torch.bfloat16
        if cfg.fp16:
            return torch.float16
        return torch.float32

    def load_pretrained(self, model_class, cfg: TrainConfig, **kwargs):
        """`model_class.from_pretrained` in the run's dtype; with use_4bit, bitsandbytes nf4
        weights on this process's own GPU, prepared for k-bit training."""
        kwargs.update(dtype=self.dtype(cfg), trust_remote_code=cfg.trust_remote_code)
        if cfg.use_4bit:
            import torch
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float16 if cfg.fp16 else torch.bfloat16)
            # bitsandbytes places the weights at load time: each torchrun rank on its own GPU
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
        model = model_class.from_pretrained(cfg.model_name, **kwargs)
        if cfg.use_4bit:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        return model

    def model_class(self, model_config):
        """The transformers auto class of a model: seq2seq LM for encoder-decoders (T5, BART),
        causal LM otherwise."""
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM if is_encoder_decoder(model_config) else AutoModelForCausalLM

    def load_for_inference(self, model_name: str, adapter, dtype,
                           trust_remote_code: bool = False):
        """A finished run: its base model in `dtype` with the saved adapter attached (PEFT, on
        the CPU), and the tokenizer saved with the adapter. Both providers save plain PEFT
        adapters, so transformers + peft load them (this never imports unsloth)."""
        from peft import PeftModel

        config = load_model_config(model_name, trust_remote_code)
        base = self.model_class(config).from_pretrained(model_name, dtype=dtype,
                                                        trust_remote_code=trust_remote_code)
        model = PeftModel.from_pretrained(base, str(adapter))
        return model, load_tokenizer(str(adapter), trust_remote_code)


def load_tokenizer(source: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_model_config(model_name: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_name, trust_remote_code=trust_remote_code)


def is_encoder_decoder(model_config) -> bool:
    return bool(getattr(model_config, "is_encoder_decoder", False))


def linear_module_names(model) -> list[str]:
    """Names of every linear projection (last name part), except the output head."""
    import torch

    head = model.get_output_embeddings()
    names = set()
    for full_name, module in model.named_modules():
        if module is head:
            continue
        is_linear = isinstance(module, torch.nn.Linear) or type(module).__name__ in (
            "Linear4bit", "Linear8bitLt")
        if is_linear:
            names.add(full_name.rsplit(".", 1)[-1])
    names.discard("lm_head")
    names.discard("score")  # the head of a sequence-classification model is trained fully
    return sorted(names)


def resolve_target_modules(cfg: TrainConfig, model) -> list[str]:
    if cfg.target_modules == "auto":
        return linear_module_names(model)
    present = set(linear_module_names(model))
    missing = [m for m in cfg.target_modules if m not in present]
    if missing:
        from trainers.errors import ConfigError

        raise ConfigError([{"field": "target_modules",
                            "message": f"{missing} are not linear layers of this model: use "
                                       f"\"auto\" or names from {sorted(present)}"}])
    return list(cfg.target_modules)


def device_facts() -> dict:
    """What the started event says about the hardware."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {"device": "cuda", "device_name": props.name,
                "device_memory_gib": round(props.total_memory / 2**30, 2),
                "compute_capability": f"{props.major}.{props.minor}",
                "bf16_supported": torch.cuda.is_bf16_supported(),
                "cuda_version": torch.version.cuda}
    import platform

    return {"device": "cpu", "device_name": platform.processor() or platform.machine(),
            "device_memory_gib": None, "cuda_version": None}


def check_cuda_features(cfg: TrainConfig) -> None:
    """4-bit and 8-bit optimizers need bitsandbytes on CUDA; say so before loading."""
    import torch

    needs_cuda = []
    if cfg.use_4bit:
        needs_cuda.append("use_4bit (bitsandbytes 4-bit)")
    if "8bit" in cfg.optim:
        needs_cuda.append(f"optim {cfg.optim}")
    if cfg.fp16:
        needs_cuda.append("fp16")
    if cfg.num_processes > 1 and cfg.distributed_strategy == "fsdp":
        needs_cuda.append("distributed_strategy fsdp (transformers shards with FSDP on GPUs only)")
    if needs_cuda and not torch.cuda.is_available():
        raise EnvironmentProblem(
            f"{', '.join(needs_cuda)} needs a CUDA GPU, and none is visible.",
            "Run on a machine with an NVIDIA GPU, or turn these off (use_4bit false, "
            "optim adamw_torch, bf16 or fp32 instead of fp16, ddp instead of fsdp).")
    if cfg.use_4bit or "8bit" in cfg.optim:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise EnvironmentProblem("bitsandbytes is not installed.",
                                     "pip install bitsandbytes, or turn off use_4bit and 8-bit optim.")
    if cfg.bf16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise EnvironmentProblem("This GPU does not support bf16.",
                                 "Set bf16 false and fp16 true (pre-Ampere GPUs).")


def library_versions(names=("torch", "transformers", "peft", "trl", "datasets", "accelerate",
                            "bitsandbytes", "unsloth", "unsloth_zoo", "xformers", "triton")) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
