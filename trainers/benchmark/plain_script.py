"""A benchmark variant written with the bare libraries: no ModelForge code at all.

  python plain_script.py SETTINGS.json PROVIDER OUT.json

PROVIDER is huggingface (transformers + PEFT + bitsandbytes + TRL) or unsloth (Unsloth + TRL).
SETTINGS.json (written by `modelforge bench --check-plain` beside this copy) holds the
benchmark's values: the model and tokenizer directories, the rows file (the engine's
tokenized rows, in training order), LoRA, the measurement's warm-up steps, and every SFTConfig
argument, set explicitly (`import unsloth` changes TRL's defaults: gradient accumulation,
weight decay, warm-up, seed, optimizer, learning rate). This file only imports what a user of
the libraries imports, so its tokens/s is what those libraries give on these rows.

Measured as the engine measures: a step clock (torch.cuda.synchronize, then perf_counter) read
when training begins and at the end of every optimizer step, the warm-up steps left out,
non-padding tokens of the rows each step trained; tokens/s over the median step and over the
total measured time. Prints one line starting "PLAIN RESULT" and writes OUT.json.
"""

import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

PROVIDERS = ("huggingface", "unsloth")


def read_settings(path: str, provider: str) -> dict:
    settings = json.loads(Path(path).read_text())
    override = settings.get("provider_overrides", {}).get(provider, {})
    settings["sft_config"].update(override.get("sft_config", {}))
    settings.update({k: v for k, v in override.items() if k != "sft_config"})
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if provider == "unsloth":
        os.environ.update(settings["unsloth_environment"])  # read when unsloth is imported
    os.environ.update(settings.get("environment", {}))  # the allocator's, read when torch is
    return settings


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def dtype_of(settings: dict):
    import torch

    return torch.float16 if settings["precision"] == "fp16" else torch.bfloat16


def linear_names(model) -> list:
    """target_modules "auto": every linear projection's name, except the LM head."""
    import torch

    head = model.get_output_embeddings()
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if module is not head and (isinstance(module, torch.nn.Linear)
                                        or type(module).__name__ in ("Linear4bit", "Linear8bitLt"))}
    return sorted(names - {"lm_head", "score"})


def targets(settings: dict, model) -> list:
    lora = settings["lora"]
    return linear_names(model) if lora["target_modules"] == "auto" else lora["target_modules"]


PER_ROW = "sdpa_per_row"
_last_rows = {"ids": None, "version": None, "starts": None}
_last_cu = {"starts": None, "longest": 0, "cu_seq": None, "gqa": {}}


def row_starts(position_ids, items: int) -> list:
    """Each batch item's row starts (a position id of 0 starts a row), read once per forward:
    every layer gets the same tensor, so the host waits for the device once, not per layer."""
    if position_ids is _last_rows["ids"] and position_ids._version == _last_rows["version"]:
        return _last_rows["starts"]
    starts = [{0} for _ in range(items)]
    for item, start in (position_ids.expand(items, -1) == 0).nonzero().tolist():
        starts[item].add(start)
    starts = [sorted(s) for s in starts]
    _last_rows.update(ids=position_ids, version=position_ids._version, starts=starts)
    return starts


def per_row_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                      position_ids=None, **kwargs):
    """SDPA on each packed row alone, causal and without a mask, so SDPA can pick its flash
    kernel: the attention of the engine's `attention: sdpa_per_row` (trainers/train/
    attention.py), for the padding-free batches of training. On an Ampere or newer NVIDIA GPU
    with torch's varlen flash attention and bf16/fp16 inputs, all rows in one varlen call
    instead, as there."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    all_starts = row_starts(position_ids, query.shape[0])
    if (query.is_cuda and not dropout and query.dtype in (torch.bfloat16, torch.float16)
            and flash_capable(query.device)):
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:
            varlen_attn = None
        if varlen_attn is not None:
            return one_varlen_call(varlen_attn, query, key, value, all_starts, scaling), None
    outputs = []
    for item, starts in enumerate(all_starts):
        rows = zip(starts, starts[1:] + [query.shape[2]])
        outputs.append(torch.cat([sdpa_attention_forward(
            module, query[item:item + 1, :, a:b], key[item:item + 1, :, a:b],
            value[item:item + 1, :, a:b], None, dropout=dropout, scaling=scaling,
            **kwargs)[0] for a, b in rows], dim=1))
    return torch.cat(outputs, dim=0), None


@functools.cache
def flash_capable(device) -> bool:
    """torch's flash kernels need an Ampere or newer NVIDIA GPU (asked once, not per layer)."""
    import torch

    return torch.version.hip is None and torch.cuda.get_device_capability(device) >= (8, 0)


def one_varlen_call(varlen_attn, query, key, value, starts, scaling):
    """All packed rows in one causal varlen flash-attention call (batch item i's tokens laid
    after item i-1's); returns (batch, tokens, heads, head_dim) as the per-row SDPA loop."""
    import inspect

    import torch

    items, heads, length, head_dim = query.shape
    if _last_cu["starts"] is not starts:  # once per forward: a copy to the GPU waits for it
        ends = [item * length + s for item, item_starts in enumerate(starts)
                for s in item_starts[1:] + [length]]
        # torch 2.11 takes fewer key/value heads as they are; later versions ask by name
        gqa = {"enable_gqa": True} if key.shape[1] != heads and \
            "enable_gqa" in inspect.signature(varlen_attn).parameters else {}
        _last_cu.update(starts=starts, longest=max(b - a for a, b in zip([0] + ends, ends)),
                        cu_seq=torch.tensor([0] + ends, dtype=torch.int32, device=query.device),
                        gqa=gqa)
    cu_seq, longest, gqa = _last_cu["cu_seq"], _last_cu["longest"], _last_cu["gqa"]

    def tokens_first(t):
        return t.transpose(1, 2).reshape(items * length, t.shape[1], head_dim)

    out = varlen_attn(tokens_first(query), tokens_first(key), tokens_first(value), cu_seq,
                      cu_seq, longest, longest, scale=scaling, window_size=(-1, 0), **gqa)
    return out.reshape(items, length, heads, head_dim)


def no_mask(batch_size, q_length, kv_length, attention_mask=None, **kwargs):
    """No mask for per-row attention; a padded batch would need one, so it is refused."""
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError(f"{PER_ROW} attention needs padding-free batches")
    return None


def attention_implementation(settings: dict) -> str:
    """The spec's attention (settings without one: sdpa), registered with transformers."""
    name = settings.get("attention", "sdpa")
    if name == PER_ROW:
        from transformers import AttentionInterface, AttentionMaskInterface

        AttentionInterface.register(PER_ROW, per_row_attention)
        AttentionMaskInterface.register(PER_ROW, no_mask)
    return name


def load_huggingface(settings: dict):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype, four_bit = dtype_of(settings), settings["load_in_4bit"]
    kwargs = {"dtype": dtype, "attn_implementation": attention_implementation(settings)}
    if four_bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(settings["model_dir"], **kwargs)
    checkpointing = settings["gradient_checkpointing"]
    if four_bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = settings["lora"]
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=targets(settings, model), bias="none",
                        task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    if settings.get("fused_lora"):
        fuse_lora_layers(model)
    return model


def fused_lora_forward(self, x, *args, **kwargs):
    """PEFT's LoRA linear forward for one plain adapter under autocast, leaner: the input stays
    in the model's dtype (PEFT casts it to the adapter's float32, autocast casts it back) and
    the branch is added inside the up-projection's GEMM (the engine's `fused_lora`,
    trainers/train/fused_lora.py). Anything else goes to PEFT's own forward."""
    import torch

    name = self.active_adapters[0] if len(self.active_adapters) == 1 else None
    plain = (name is not None and not args and not kwargs and not self.disable_adapters
             and not self.merged and name in self.lora_A and name not in self.lora_variant)
    if not plain or (x.dtype != self.lora_A[name].weight.dtype
                     and not torch.is_autocast_enabled(x.device.type)):
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    down = self.lora_A[name](self.lora_dropout[name](x))
    out = torch.addmm(result.reshape(-1, result.shape[-1]), down.reshape(-1, down.shape[-1]),
                      self.lora_B[name].weight.t(), alpha=self.scaling[name])
    return out.reshape(result.shape)


def fuse_lora_layers(model) -> None:
    import types

    from peft.tuners.lora import Linear

    for layer in (m for m in model.modules() if isinstance(m, Linear)):
        layer.forward = types.MethodType(fused_lora_forward, layer)


def load_unsloth(settings: dict):
    from unsloth import FastLanguageModel

    seed, length, lora = settings["sft_config"]["seed"], settings["max_seq_length"], \
        settings["lora"]
    model, _ = FastLanguageModel.from_pretrained(
        model_name=settings["model_dir"], max_seq_length=length, dtype=dtype_of(settings),
        load_in_4bit=settings["load_in_4bit"], random_state=seed)
    return FastLanguageModel.get_peft_model(
        model, r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
        target_modules=targets(settings, model), bias="none", random_state=seed,
        use_gradient_checkpointing="unsloth" if settings["gradient_checkpointing"] else False,
        max_seq_length=length)


def torch_lm_head_without_gpu() -> bool:
    """TRL 1.15 computes the SFT loss with a Triton-only LM-head kernel, which fails on a
    machine without a GPU ("0 active drivers"). There, use the same computation in PyTorch
    (as the engine does, trainers/train/trl_cpu.py). Unsloth patches the loss itself."""
    import torch

    if torch.cuda.is_available():
        return False
    import trl.trainer.utils as trl_utils

    class TorchChunkedLogProb:
        @staticmethod
        def apply(hidden, weight, bias, labels, temperature, chunk_size, softcap=None,
                  logit_scale=1.0, outputs=("log_probs",)):
            logits = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
            if softcap is not None:
                logits = softcap * torch.tanh(logits / softcap)
            all_lp = torch.log_softmax(logits / temperature, -1)
            picked = all_lp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            want = set(outputs)
            return (picked,
                    -(all_lp.exp() * all_lp).sum(-1) if "entropy" in want else None,
                    torch.logsumexp(2 * all_lp, -1).detach() if "log_sum_sq_probs" in want
                    else None,
                    (logits / temperature).mean(-1).detach() if "mean_logits" in want else None,
                    (logits.argmax(-1) == labels) if "is_top1" in want else None)

    trl_utils._ChunkedLogProbFunction = TorchChunkedLogProb
    return True


def lm_head_eager_under_compile() -> bool:
    """TRL computes the loss inside the model's forward, so torch.compile traces its Triton
    LM-head kernel, and inductor (torch 2.11) fails on it ("Loop-carried variable m has initial
    type fp32 but is re-assigned to fp64"). Run that kernel eagerly; the rest still compiles
    (as the engine does, trainers/train/trl_cpu.py)."""
    import torch
    import trl.trainer.utils as trl_utils

    kernel = trl_utils._ChunkedLogProbFunction
    if kernel is None:
        return False

    class EagerChunkedLogProb:
        apply = staticmethod(torch.compiler.disable(kernel.apply))

    trl_utils._ChunkedLogProbFunction = EagerChunkedLogProb
    return True


def step_clock():
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Synchronised marks at the start and after each optimizer step; tokens and losses."""

        def __init__(self):
            self.marks, self.tokens_seen, self.losses = [], [], {}

        def now(self) -> float:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks = [self.now()]

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(self.now())
            self.tokens_seen.append(int(state.num_input_tokens_seen or 0))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses[state.global_step] = float(logs["loss"])
                print(f"step {state.global_step}/{args.max_steps} loss {logs['loss']:.4f} "
                      f"{self.marks[-1] - self.marks[-2]:.4f} s", flush=True)

    return StepClock()


def step_tokens(rows: list, batch_size: int) -> list:
    """Non-padding tokens of each step's rows, as the sequential sampler feeds them."""
    lengths = [len(r["input_ids"]) for r in rows]
    return [sum(lengths[i:i + batch_size]) for i in range(0, len(lengths), batch_size)]


def speed(marks: list, tokens: list, warmup: int) -> dict:
    """Tokens/s after the warm-up: mean tokens per step over the median step, and in total."""
    times = [b - a for a, b in zip(marks, marks[1:])]
    measured, measured_tokens = times[warmup:], tokens[warmup:len(times)]
    if not measured:
        raise RuntimeError(f"{len(times)} steps ran, none after the {warmup} warm-up steps")
    median = statistics.median(measured)
    return {"step_times_s": [round(t, 5) for t in times], "warmup_steps": warmup,
            "measured_steps": len(measured), "median_step_s": median,
            "min_step_s": min(measured), "max_step_s": max(measured), "measured_time_s": sum(measured), "measured_tokens": sum(measured_tokens),
            "tokens_per_s": statistics.fmean(measured_tokens) / median,
            "tokens_per_s_total": sum(measured_tokens) / sum(measured)}


def memory() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"max_allocated_gib": None, "max_reserved_gib": None}
    return {"max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "max_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


def trainer_settings(trainer) -> dict:
    """What the trainer really uses, after the libraries applied their own defaults."""
    args = trainer.args
    value = lambda x: getattr(x, "value", x)  # noqa: E731 - enums as their strings
    return {"trainer_class": f"{type(trainer).__module__}.{type(trainer).__qualname__}",
            "attention": getattr(trainer.model.config, "_attn_implementation", None),
            "padding_free": bool(getattr(args, "padding_free", False)),
            "collator": type(trainer.data_collator).__name__,
            "optim": value(args.optim), "learning_rate": args.learning_rate,
            "lr_scheduler_type": value(args.lr_scheduler_type),
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "gradient_checkpointing_args": bool(args.gradient_checkpointing),
            "train_sampling_strategy": getattr(args, "train_sampling_strategy", None),
            "max_length": getattr(args, "max_length", None), "bf16": bool(args.bf16),
            "fp16": bool(args.fp16), "use_cpu": bool(args.use_cpu),
            "use_liger_kernel": bool(getattr(args, "use_liger_kernel", False)),
            "cudnn_sdp_enabled": bool(__import__("torch").backends.cuda.cudnn_sdp_enabled()),
            "weight_decay": args.weight_decay, "warmup_steps": args.warmup_steps,
            "seed": args.seed}


def main(argv: list) -> int:
    if len(argv) != 3 or argv[1] not in PROVIDERS:
        print(__doc__, file=sys.stderr)
        return 2
    settings_path, provider, out_path = argv
    settings = read_settings(settings_path, provider)
    if provider == "unsloth":
        import unsloth  # noqa: F401 - before transformers, TRL and PEFT, as Unsloth requires
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    # cuDNN's SDPA attention on or off, as the benchmark's spec says (its cudnn_attention field)
    torch.backends.cuda.enable_cudnn_sdp(settings["cudnn_attention"])
    rows = json.loads(Path(settings["rows_file"]).read_text())["rows"]
    tokenizer = load_tokenizer(settings["tokenizer_dir"])
    set_seed(settings["sft_config"]["seed"])
    model = load_unsloth(settings) if provider == "unsloth" else load_huggingface(settings)
    lm_head_replaced = provider == "huggingface" and torch_lm_head_without_gpu()
    if settings["sft_config"].get("torch_compile"):
        lm_head_eager_under_compile()
    clock = step_clock()
    output_dir = Path(out_path).resolve().parent / f"trainer-{provider}"
    config = SFTConfig(**settings["sft_config"], output_dir=str(output_dir),
                       use_cpu=not torch.cuda.is_available())  # as Unsloth's CPU backend sets
    trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(rows), callbacks=[clock])
    started = time.perf_counter()
    trainer.train()
    train_wall_s = time.perf_counter() - started
    if provider == "huggingface" and "unsloth" in sys.modules:
        raise RuntimeError("unsloth was imported in the huggingface process: not a stock baseline")
    steps = len(clock.marks) - 1
    tokens = step_tokens(rows, settings["sft_config"]["per_device_train_batch_size"])[:steps]
    timing = speed(clock.marks, tokens, settings["warmup_steps"])
    result = {
        "provider": provider, "mode": settings["mode"], "status": "ok",
        "timing": {**timing, "train_wall_s": train_wall_s},
        "tokens": {"per_step": tokens,
                   "trainer_per_step": [b - a for a, b in zip([0] + clock.tokens_seen,
                                                               clock.tokens_seen)]},
        "loss": {"first_step": clock.losses.get(1),
                 "curve": [clock.losses.get(s) for s in range(1, steps + 1)]},
        "effective": trainer_settings(trainer),
        "trl_lm_head_replaced": lm_head_replaced,
        "unsloth_in_process": "unsloth" in sys.modules,
        # the proof that this script ran without ModelForge: no module of it was ever loaded
        "trainers_modules": sorted(m for m in sys.modules if m.split(".")[0] == "trainers"),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "memory": memory(),
        "command": " ".join([sys.executable, *sys.argv]),
    }
    Path(out_path).write_text(json.dumps(result, indent=2))
    print(f"PLAIN RESULT {provider} {settings['mode']}: {timing['tokens_per_s']:,.0f} tokens/s "
          f"(median step {timing['median_step_s']:.4f} s), {timing['tokens_per_s_total']:,.0f} "
          f"tokens/s over {timing['measured_steps']} measured steps; first-step loss "
          f"{result['loss']['first_step']}; written to {out_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
