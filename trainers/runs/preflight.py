"""What a worker would refuse, checked before the run is queued (no torch here).

A config can be valid and still fail five seconds into its run: a GPU-only setting on a machine
without a GPU (the `optimal` preset's use_4bit), or a data file with a malformed line. The
dashboard's Validate, `/api/config/check` and submitting a run ask these questions first, so
"valid" means what Start would accept. The worker keeps its own checks (its machine may differ).
"""

from __future__ import annotations

import importlib.util

from trainers.config import TrainConfig
from trainers.errors import ConfigError, ModelForgeError

GPU_FIX = "or run on a machine with an NVIDIA GPU"


def gpu_only_problems(cfg: TrainConfig, devices: list[str]) -> list[dict]:
    """The settings that need CUDA (bitsandbytes), one problem each, when `devices` is the CPU
    alone (as the run manager sees this machine); [] on a machine with GPUs."""
    problems = []
    if devices == ["cpu"]:
        if cfg.use_4bit:
            fix = "set use_4bit to false and strategy to sft" if cfg.strategy == "qlora" \
                else "set use_4bit to false"
            problems.append({"field": "use_4bit", "message": "4-bit loading (bitsandbytes) needs "
                             f"a CUDA GPU and this machine has none: {fix} (16-bit LoRA), "
                             f"{GPU_FIX}"})
        if "8bit" in cfg.optim:
            problems.append({"field": "optim", "message": f"{cfg.optim} needs bitsandbytes on a "
                             "CUDA GPU and this machine has none: use adamw_torch, " + GPU_FIX})
        if cfg.fp16:
            problems.append({"field": "fp16", "message": "fp16 mixed precision needs a CUDA GPU "
                             "and this machine has none: set fp16 to false, " + GPU_FIX})
        if cfg.liger_kernel:
            problems.append({"field": "liger_kernel", "message": "Liger's kernels are Triton GPU "
                             "kernels and this machine has no GPU: set liger_kernel to false, "
                             + GPU_FIX})
        if cfg.num_processes > 1 and cfg.distributed_strategy == "fsdp":
            problems.append({"field": "distributed_strategy", "message": "fsdp shards the model "
                             "across GPUs and this machine has none: use ddp, " + GPU_FIX})
    elif (cfg.use_4bit or "8bit" in cfg.optim) and importlib.util.find_spec("bitsandbytes") is None:
        field = "use_4bit" if cfg.use_4bit else "optim"
        problems.append({"field": field, "message": "needs bitsandbytes, which is not installed: "
                         "pip install bitsandbytes, or turn off use_4bit and 8-bit optimizers"})
    if devices != ["cpu"] and cfg.liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        problems.append({"field": "liger_kernel", "message": "needs liger-kernel, which is not "
                         "installed: pip install liger-kernel, or set liger_kernel to false"})
    return problems


def check_gpu_only(cfg: TrainConfig, devices: list[str]) -> None:
    """ConfigError (422) naming each GPU-only setting this machine cannot run."""
    problems = gpu_only_problems(cfg, devices)
    if problems:
        raise ConfigError(problems)


def data_problems(cfg: TrainConfig) -> list[dict]:
    """Read the data set as the worker will (every line, the format, the strategy's needs) in
    a preview subprocess without a tokenizer; one problem naming the file and the line, or [].
    A hub data set is not read here: it needs a network."""
    from trainers.data import _looks_like_hub_id

    if _looks_like_hub_id(cfg.dataset):
        return []
    from trainers.tools.preview import PreviewRequest, run_preview

    from trainers.data import eval_split_problem

    request = PreviewRequest.from_config({**cfg.model_dump(mode="json"), "model_name": ""})
    try:
        found = run_preview(request.model_copy(update={"n": 1}))
    except ModelForgeError as exc:
        message = exc.message + (f" Fix: {exc.hint}" if exc.hint else "")
        return [{"field": "dataset", "message": message}]
    too_few = eval_split_problem(found["num_examples"], cfg.eval_split,
                                 cfg.per_device_train_batch_size)
    return [{"field": "eval_split", "message": too_few}] if too_few else []


def preflight_problems(cfg: TrainConfig, devices: list[str]) -> list[dict]:
    """Everything above: what Validate and /api/config/check add to the config's own rules."""
    return gpu_only_problems(cfg, devices) + data_problems(cfg)
