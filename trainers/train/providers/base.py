"""What every provider shares: target-module resolution, dtype choice, device facts."""

from __future__ import annotations

from abc import ABC, abstractmethod

from trainers.config import TrainConfig
from trainers.errors import EnvironmentProblem


class Provider(ABC):
    name = "base"

    def __init__(self) -> None:
        self.info: dict = {"provider": self.name}

    def check(self, cfg: TrainConfig) -> None:
        """Raise a typed error for what this provider cannot do, before heavy imports."""

    def load_tokenizer(self, cfg: TrainConfig):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.model_name,
                                                  trust_remote_code=cfg.trust_remote_code)
        return ensure_pad_token(tokenizer)

    @abstractmethod
    def load_model(self, cfg: TrainConfig, max_seq_length: int, tokenizer):
        """Return a PEFT model with the LoRA adapter attached (trainable), ready for a trainer."""


def ensure_pad_token(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def compute_dtype(cfg: TrainConfig):
    import torch

    if cfg.bf16:
        return torch.bfloat16
    if cfg.fp16:
        return torch.float16
    return torch.float32


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
