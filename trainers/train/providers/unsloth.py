"""Unsloth: FastLanguageModel loading and LoRA, with proof that Unsloth's path ran.

Unsloth patches transformers, TRL and PEFT when imported, so `check` imports it before anything
else loads them (the worker calls `check` before loading the tokenizer or the model). A run
labelled unsloth never trains as plain Hugging Face: if the loaded model carries no sign of
Unsloth's patching, the run fails saying so.

On a machine without a GPU, Unsloth 2026.10.9 selects its CPU backend (stock transformers and PEFT
plus Unsloth's chunked cross-entropy and TRL patches); its GPU kernels do not run there. The
started event names the backend, so CPU numbers are never mistaken for GPU fast-path numbers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from trainers.config import TrainConfig
from trainers.errors import (ProviderError, UnslothMissingError, UnsupportedModelError,
                             UnsupportedPlatformError)
from trainers.train.providers.base import Provider, check_cuda_features, resolve_target_modules

# model_type -> family name, for the families Unsloth 2026.10.9 has fast paths for.
SUPPORTED_FAMILIES = {
    "llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2/2.5", "qwen3": "Qwen3",
    "gemma": "Gemma", "gemma2": "Gemma 2", "gemma3": "Gemma 3", "gemma3_text": "Gemma 3",
    "phi": "Phi-2", "phi3": "Phi-3",
}
# model_type -> what failed on a CUDA GPU with this Unsloth (2026.10.9) and torch 2.11, seen on an
# H100 (benchmarks/results/acceptance_h100_2026-12-07/): refused before the model loads rather
# than minutes into the run. Unsloth's CPU backend does not compile these layers.
FAILS_ON_GPU = {
    "gemma2": "Unsloth's compiled Gemma 2 layers fail in torch.compile (InductorError: "
              "AssertionError) on a CUDA GPU, for 16-bit and 4-bit LoRA alike",
}
UNSLOTH_MISSING = ("Unsloth is not installed. Install it with `pip install unsloth` (or this "
                   "project's unsloth extra), or use provider huggingface")
FLASH_ATTN_ENV = "UNSLOTH_DISABLE_FLASH_ATTN"


def check_platform(where: str) -> None:
    """`where` is trainers.tools.doctor.detect_platform()'s answer (the environment report's too)."""
    if where.startswith("Windows"):
        raise UnsupportedPlatformError(
            "Unsloth is not supported on native Windows: use WSL 2 or Docker",
            "Run ModelForge inside WSL 2 or the Docker image, or use provider huggingface.")
    if where == "macOS":
        raise UnsupportedPlatformError(
            "Unsloth is not supported on macOS (it needs an NVIDIA GPU)",
            "Use provider huggingface on this Mac, or run on Linux, WSL 2 or Docker with a GPU.")
    if where not in ("Linux", "WSL 2", "Docker"):
        raise UnsupportedPlatformError(
            f"Unsloth is not supported on {where}: it runs on Linux, WSL 2 and Docker",
            "Use provider huggingface here (WSL 1 has no GPU: `wsl --set-version <distro> 2`).")


def model_type_of(cfg: TrainConfig) -> tuple[str, bool]:
    """(model_type, is_encoder_decoder) from config.json, without loading weights."""
    local = Path(cfg.model_name) / "config.json"
    if local.is_file():
        data = json.loads(local.read_text())
        return data.get("model_type", ""), bool(data.get("is_encoder_decoder", False))
    from transformers import AutoConfig  # after `import unsloth` (see check)

    config = AutoConfig.from_pretrained(cfg.model_name, trust_remote_code=cfg.trust_remote_code)
    return config.model_type, bool(getattr(config, "is_encoder_decoder", False))


def check_model_family(model_type: str, encoder_decoder: bool) -> str | None:
    """Refuse encoder-decoders; return a warning for families without a verified fast path."""
    if encoder_decoder or model_type in ("t5", "mt5", "bart", "mbart", "pegasus", "led"):
        raise UnsupportedModelError(
            f"Model type '{model_type}' (encoder-decoder) is not supported by the unsloth "
            "provider: use provider huggingface",
            "Set provider to huggingface; it trains T5 and BART models for summarization.")
    if model_type not in SUPPORTED_FAMILIES:
        return (f"Model type '{model_type}' is not one of Unsloth's verified families "
                f"({', '.join(sorted(set(SUPPORTED_FAMILIES.values())))}); Unsloth's generic "
                "path will be used, and the run fails if Unsloth does not patch the model.")
    return None


def check_known_failure(model_type: str, cpu_backend: bool) -> None:
    """Refuse a family that this Unsloth is known to fail on a GPU (FAILS_ON_GPU)."""
    if model_type in FAILS_ON_GPU and not cpu_backend:
        raise UnsupportedModelError(
            f"Model type '{model_type}' cannot train with the unsloth provider here: "
            f"{FAILS_ON_GPU[model_type]}",
            "Set provider to huggingface for this model (its 16-bit and 4-bit LoRA run on a GPU).")


def disable_flash_attention() -> None:
    """Make Unsloth and transformers treat flash-attn as absent (Unsloth's own remedy when
    flash-attn is broken): every loaded unsloth module's HAS_FLASH_ATTENTION flag goes off."""
    import transformers.utils
    import transformers.utils.import_utils

    for name, module in list(sys.modules.items()):
        if name.startswith(("unsloth", "unsloth_zoo")) and hasattr(module, "HAS_FLASH_ATTENTION"):
            module.HAS_FLASH_ATTENTION = False
    transformers.utils.import_utils.is_flash_attn_2_available = lambda *a, **k: False
    transformers.utils.is_flash_attn_2_available = lambda *a, **k: False


def flash_attention_state() -> str:
    if os.environ.get(FLASH_ATTN_ENV) == "1":
        return f"disabled by {FLASH_ATTN_ENV}=1"
    import unsloth

    if getattr(unsloth, "_IS_CPU_BACKEND", False):
        # importing unsloth.models here would load the GPU-side patches into a CPU run
        return "SDPA (Unsloth CPU backend)"
    from unsloth.models import _utils

    return "flash-attn 2" if getattr(_utils, "HAS_FLASH_ATTENTION", False) else \
        "not available (xformers / SDPA)"


def patch_evidence(model) -> dict:
    """What shows that Unsloth, not plain transformers, drives this model."""
    import unsloth

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = _decoder_layers(base)
    patched = sum(1 for layer in layers if _patched_by_unsloth(layer))
    cpu_backend = bool(getattr(unsloth, "_IS_CPU_BACKEND", False))
    evidence = {
        "unsloth_version": unsloth.__version__,
        "backend": "cpu" if cpu_backend else "gpu-fast-path",
        "model_family": getattr(base.config, "model_type", None),
        "config_unsloth_version": getattr(base.config, "unsloth_version", None),
        "decoder_layers": len(layers),
        "patched_decoder_layers": patched,
        "chunked_cross_entropy": bool(vars(base).get("_unsloth_cpu_chunked_ce", False)),
    }
    if cpu_backend:
        import trl.trainer.utils as trl_utils

        evidence["trl_lm_head_dispatch"] = bool(
            getattr(trl_utils._ChunkedLogProbFunction, "_unsloth_cpu_dispatch", False))
        # the process-wide TRL dispatch is recorded, but only the model's own patch decides
        evidence["active"] = evidence["chunked_cross_entropy"]
    else:
        # config.unsloth_version is stamped on every model Unsloth loads, patched or not
        evidence["active"] = patched > 0
    return evidence


def _decoder_layers(model) -> list:
    for holder in (getattr(model, "model", None), model):
        layers = getattr(holder, "layers", None)
        if layers is not None:
            return list(layers)
    return []


def _patched_by_unsloth(layer) -> bool:
    """A layer (or its attention / MLP) whose forward comes from an unsloth module."""
    for module in (layer, getattr(layer, "self_attn", None), getattr(layer, "mlp", None)):
        forward = getattr(type(module), "forward", None) if module is not None else None
        if forward is not None and getattr(forward, "__module__", "").startswith("unsloth"):
            return True
    return False


class UnslothProvider(Provider):
    name = "unsloth"

    def check(self, cfg: TrainConfig) -> None:
        from trainers.tools.doctor import detect_platform

        where = detect_platform()
        self.info["os"] = where
        check_platform(where)
        try:
            import unsloth  # noqa: F401 - first, so it patches transformers/TRL/PEFT
        except ImportError as exc:
            raise UnslothMissingError(UNSLOTH_MISSING,
                                      "pip install unsloth, or set provider to huggingface") \
                from exc
        if os.environ.get(FLASH_ATTN_ENV) == "1":
            disable_flash_attention()
        check_cuda_features(cfg)
        model_type, encoder_decoder = model_type_of(cfg)
        warning = check_model_family(model_type, encoder_decoder)
        check_known_failure(model_type, getattr(unsloth, "_IS_CPU_BACKEND", False))
        self.info["warnings"] = [warning] if warning else []

    def load_model(self, cfg: TrainConfig):
        from unsloth import FastLanguageModel

        dtype = self.dtype(cfg)
        model, _ = FastLanguageModel.from_pretrained(
            model_name=cfg.model_name, max_seq_length=cfg.max_seq_length, dtype=dtype,
            load_in_4bit=cfg.use_4bit, trust_remote_code=cfg.trust_remote_code,
            random_state=cfg.seed)
        targets = resolve_target_modules(cfg, model)
        model = FastLanguageModel.get_peft_model(
            model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=targets, bias="none", random_state=cfg.seed,
            use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
            max_seq_length=cfg.max_seq_length)
        evidence = patch_evidence(model)
        if not evidence["active"]:
            raise ProviderError(
                f"Unsloth loaded the model but did not patch it ({evidence}); the run stops "
                "rather than train as plain Hugging Face under the unsloth label.",
                "Use provider huggingface for this model, or a model family Unsloth supports.")
        self.info.update(self._describe(cfg, model, targets, evidence, dtype))
        return model

    def apply_process_fixes(self) -> dict:
        return {}  # `import unsloth` installed Unsloth's own CPU dispatch for TRL's LM head

    def _describe(self, cfg, model, targets, evidence, dtype) -> dict:
        trainable, total = model.get_nb_trainable_parameters()
        notes = list(self.info.get("warnings", []))
        if evidence["backend"] == "cpu":
            notes.append("No GPU: Unsloth's CPU backend runs (stock transformers + PEFT with "
                         "Unsloth's chunked cross-entropy); its GPU kernels are not used.")
            if cfg.packing:
                notes.append("Unsloth's CPU backend turns packing off.")
            if cfg.padding_free:
                notes.append("Unsloth's CPU backend turns padding_free off: batches are padded.")
            if cfg.optim != "adamw_torch_fused":
                notes.append(f"Unsloth's CPU backend replaces optim {cfg.optim} with "
                             "adamw_torch_fused.")
        return {
            "architecture": type(model.get_base_model()).__name__,
            "attention": flash_attention_state(),
            "flash_attention_disabled": os.environ.get(FLASH_ATTN_ENV) == "1",
            "quantization": "bnb-nf4 (Unsloth)" if cfg.use_4bit else None,
            "dtype": str(dtype).replace("torch.", ""),
            "target_modules": sorted(targets),
            "trainable_parameters": trainable, "total_parameters": total,
            "gradient_checkpointing": "unsloth" if cfg.gradient_checkpointing else False,
            "unsloth": evidence,
            "warnings": notes,
        }
