"""Turn an exception (in the worker) or a failed run's record (in the UI) into a diagnosis:
`error_type`, a plain `message`, a `hint` with the fix, and for out-of-memory the remedies
with the run's own values filled in. Imports nothing heavy.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from trainers.errors import ModelForgeError

FLASH_ATTN_HINT = ("Set UNSLOTH_DISABLE_FLASH_ATTN=1 in the server's environment to run without "
                   "flash attention, or install a flash-attn build that matches your torch and CUDA.")


def oom_remedies(cfg) -> list[str]:
    """The four remedies, in order, with this run's values."""
    seq = cfg.max_seq_length if cfg.max_seq_length > 0 else 2048
    batch = cfg.per_device_train_batch_size
    return [
        f"reduce max_seq_length ({seq} -> {max(16, seq // 2)})",
        f"reduce per_device_train_batch_size ({batch} -> {max(1, batch // 2)}) and raise "
        f"gradient_accumulation_steps ({cfg.gradient_accumulation_steps} -> "
        f"{cfg.gradient_accumulation_steps * 2}) to keep the effective batch",
        "enable gradient_checkpointing" + (" (already on)" if cfg.gradient_checkpointing else ""),
        "enable use_4bit (QLoRA)" + (" (already on)" if cfg.use_4bit else ""),
    ]


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc).lower()
    return name == "OutOfMemoryError" or "out of memory" in text or \
        "can't allocate memory" in text or "cannot allocate memory" in text


DISK_FULL_HINT = "Free space on the disk that holds the run directory (or output_dir), then " \
                 "start the run again."
LOW_DISK_BYTES = 2**20  # less than this is a full disk: a checkpoint or an event does not fit


def disk_full(detail: str, folder: Path | None = None) -> dict:
    where = f" that holds {folder}" if folder else ""
    return {"error_type": "disk_full",
            "message": f"The disk{where} is full (ENOSPC, no space left on device): "
                       f"{detail}"[:2000],
            "hint": DISK_FULL_HINT}


def full_disk(folders) -> Path | None:
    """The first of these folders whose disk has (almost) no space left. A full disk often shows
    as another error (torch.save: "unexpected pos"), or as a worker that could not even write
    its failure, so the free space is the evidence."""
    for folder in map(Path, folders):
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        try:
            if existing is not None and shutil.disk_usage(existing).free < LOW_DISK_BYTES:
                return folder
        except OSError:
            continue
    return None


def diagnose_exception(exc: BaseException, cfg=None, folders=()) -> dict:
    """`folders`: where the run writes; an unexplained error with one of their disks full is
    the full disk."""
    if isinstance(exc, ModelForgeError):
        return exc.to_dict()
    text = f"{type(exc).__name__}: {exc}".strip()
    if _is_oom(exc):
        where = "GPU" if "cuda" in text.lower() else "memory"
        remedies = oom_remedies(cfg) if cfg is not None else []
        return {"error_type": "oom", "message": f"Out of {where}: {text[:500]}",
                "hint": "Try, in this order: " + "; ".join(remedies) if remedies else "",
                "remedies": remedies}
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return disk_full(str(exc))
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return {"error_type": "output_not_writable",
                "message": f"Could not write the run's files: {exc}",
                "hint": "Make output_dir (or the data directory) writable, or choose another."}
    diagnosis = diagnose_text(text)
    full = full_disk(folders) if diagnosis["error_type"] == "internal" else None
    return disk_full(text, full) if full else diagnosis


# (error_type, words any of which mark it, hint)
_TEXT_RULES = [
    ("oom", ("out of memory", "outofmemoryerror"),
     "Reduce max_seq_length, then per_device_train_batch_size; enable gradient_checkpointing "
     "and use_4bit."),
    ("flash_attention", ("flash_attn", "flash-attn", "flashattention", "flash attention"),
     FLASH_ATTN_HINT),
    ("unsloth_missing", ("no module named 'unsloth'",),
     "Install it with `pip install unsloth` (or this project's unsloth extra), or use provider "
     "huggingface."),
    ("bitsandbytes", ("bitsandbytes", "bnb"),
     "Install bitsandbytes with CUDA support (`pip install bitsandbytes`) on a machine with an "
     "NVIDIA GPU, or set use_4bit false and optim adamw_torch."),
    ("cuda_missing", ("no cuda gpus are available", "torch not compiled with cuda",
                      "found no nvidia driver", "cuda driver", "0 active drivers"),
     "This needs an NVIDIA GPU with a working driver; check `nvidia-smi`, or run without "
     "GPU-only features (use_4bit, 8-bit optimizers)."),
    ("max_seq_length", ("max_seq_length",),
     "Set a fixed max_seq_length such as 2048 (-1 works only with the huggingface provider)."),
    ("data", ("jsondecodeerror", "malformed json", "missing field", "data set file"),
     "Fix the data file: each row needs the fields of one supported format."),
    ("killed", ("killed by signal", "sigkill"),
     "The worker was killed from outside, often by the kernel's out-of-memory killer: "
     "check `dmesg`, then reduce max_seq_length or the batch size."),
    # libraries that wrap OS errors in their own exceptions (safetensors' SafetensorError)
    ("disk_full", ("no space left on device", "os error 28", "disk quota exceeded"),
     DISK_FULL_HINT),
    ("output_not_writable", ("read-only file system", "os error 30"),
     "Make output_dir (or the data directory) writable, or choose another."),
    ("model_not_available", ("couldn't connect to 'https://huggingface.co'",
                             "outgoing traffic has been disabled",
                             "is not a local folder and is not a valid model identifier"),
     "The model is neither a local directory nor in the Hugging Face cache, and the hub cannot "
     "be reached (no network, or HF_HUB_OFFLINE=1). Download it where there is a network "
     "(`hf download <model>`; gated models such as meta-llama need HF_TOKEN), copy the folder "
     "to the server under an allowed root and set model_name to that path; or check the id."),
]


def diagnose_text(text: str) -> dict:
    lowered = text.lower()
    for error_type, words, hint in _TEXT_RULES:
        if any(w in lowered for w in words):
            if error_type == "disk_full":
                return disk_full(text)
            return {"error_type": error_type, "message": text[:2000], "hint": hint}
    return {"error_type": "internal", "message": text[:2000],
            "hint": "An unexpected error: see the run's log (train.log) for the traceback."}


def diagnose_run(failed_event: dict | None, log_tail: str, cfg=None) -> dict:
    """Diagnosis of a finished run from its failed event (preferred) or its log."""
    if failed_event:
        diag = {k: failed_event.get(k) for k in ("error_type", "message", "hint", "remedies")
                if failed_event.get(k) is not None}
        if diag.get("error_type") in (None, "internal"):
            diag = {**diagnose_text(diag.get("message", "") + "\n" + log_tail), **{
                "message": diag.get("message", "")}}
        if diag.get("error_type") == "oom" and cfg is not None:
            diag["remedies"] = oom_remedies(cfg)
        return diag
    return diagnose_text(log_tail or "no log")
