"""One technique on top of speed mode, measured through the product's own training worker.

    python benchmarks/gpu/experiments/speed_ablation.py TECHNIQUE[+TECHNIQUE...] RUN_DIR

Runs `trainers.train.worker` on RUN_DIR (what `modelforge train` starts) in this process, with
TECHNIQUE applied to the Hugging Face model once it has loaded with its LoRA adapter. Each
technique runs in its own process on the same rows (`train_gpu.py --techniques`); one that pays
moves into trainers/, one that does not stays here with its measured row.

  none              speed mode as shipped
  peft_lora         PEFT's own LoRA forward, its input cast to the adapter's float32 (speed mode
                    before fused_lora)
  peft_lora_bf16_inputs  PEFT's own forward without that cast (fused_lora's first half)
  per_row_loop      per-row attention as one SDPA call per row (speed mode before its one
                    varlen flash-attention call per layer)
  fp8_tensorwise    torchao float8 training (Float8Linear, tensorwise scales, inner dimensions
                    padded to 16 for padding-free token counts) on the frozen base projections;
                    it still computes their weight gradient
  fp8_rowwise       the same, rowwise scales
  fp8_frozen        base projections through torch._scaled_mm (cuBLAS FP8) with torchao-style
                    tensorwise scales: the frozen weight cast once, no weight gradient
  compile_layers    a regional torch.compile: each decoder layer compiled (dynamic shapes from
                    the start, as padding-free micro-batches change length every step), the
                    per-row attention left eager (it reads the row bounds on the host)
  default_allocator PyTorch's default allocator (PYTORCH_ALLOC_CONF=expandable_segments:False,
                    set before torch loads; speed mode before it set expandable segments, the
                    row that measured them as the technique expandable_segments)
PROFILE_STEP=N (environment): torch.profiler over step N, its tables in RUN_DIR/profile-stepN.txt.
ROWS_IN_ORDER=1 (environment): the trainer reads the rows in the data's order (a sequential
sampler, as the benchmark engine's trainer does), not shuffled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

E4M3_MAX, E5M2_MAX = 448.0, 57344.0


def lora_layers(model):
    from peft.tuners.lora import Linear as LoraLinear

    return [m for m in model.modules() if isinstance(m, LoraLinear)]


def peft_lora(model, cast: bool = True) -> str:
    """PEFT's own forward back on the layers fuse_lora_layers gave the fused one."""
    from trainers.train.fused_lora import fused_forward

    layers = lora_layers(model)
    fused = [m for m in layers if getattr(vars(m).get("forward"), "__func__", None)
             is fused_forward]
    for layer in fused:
        del layer.forward
    for layer in layers:
        layer.cast_input_dtype_enabled = cast
    return f"{len(fused)} fused LoRA layers back to PEFT's forward, input cast {cast}"


def peft_lora_bf16_inputs(model) -> str:
    return peft_lora(model, cast=False)


def per_row_loop(model) -> str:
    from trainers.train import attention

    attention._varlen_kernel = lambda: None
    return "per-row attention: one SDPA call per row, not one varlen call per layer"


def _base_projections(model) -> list[tuple[str, object]]:
    """(name, module) of each frozen base projection under a LoRA layer, FP8-shaped (x16)."""
    return [(n, m) for n, m in model.named_modules() if n.endswith(".base_layer")
            and m.in_features % 16 == 0 and m.out_features % 16 == 0]


def _torchao_fp8(model, recipe: str) -> str:
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    names = {n for n, _ in _base_projections(model)}
    config = Float8LinearConfig.from_recipe_name(recipe)
    # padding-free micro-batches hold any number of tokens; the FP8 GEMMs want multiples of 16
    config = dataclasses.replace(config, pad_inner_dim=True)
    convert_to_float8_training(model, config=config, module_filter_fn=lambda _m, fqn: fqn in names)
    return f"{len(names)} base projections -> torchao Float8Linear ({recipe})"


def fp8_tensorwise(model) -> str:
    return _torchao_fp8(model, "tensorwise")


def fp8_rowwise(model) -> str:
    return _torchao_fp8(model, "rowwise")


def fp8_frozen(model) -> str:
    import torch

    def to_fp8(t, dtype, top):
        """t in float8 with one scale (amax to the format's top), and the scale to undo it."""
        amax = t.abs().amax().float().clamp(min=1e-12)
        scale = top / amax
        return (t.float() * scale).clamp(-top, top).to(dtype), scale.reciprocal()

    cast = torch.compile(to_fp8, dynamic=True)

    def pad16(t):  # torch._scaled_mm wants every dimension a multiple of 16
        extra = -t.shape[0] % 16
        return torch.nn.functional.pad(t, (0, 0, 0, extra)) if extra else t

    class FrozenMatmul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, w_inv, w_t):
            ctx.save_for_backward(w_t, w_inv)
            flat = x.reshape(-1, x.shape[-1])
            xq, x_inv = cast(pad16(flat), torch.float8_e4m3fn, E4M3_MAX)
            y = torch._scaled_mm(xq, w.t(), scale_a=x_inv, scale_b=w_inv,
                                 out_dtype=x.dtype, use_fast_accum=True)
            return y[:flat.shape[0]].reshape(*x.shape[:-1], y.shape[-1])

        @staticmethod
        def backward(ctx, grad):
            w_t, w_inv = ctx.saved_tensors
            flat = grad.reshape(-1, grad.shape[-1])
            gq, g_inv = cast(pad16(flat), torch.float8_e5m2, E5M2_MAX)
            dx = torch._scaled_mm(gq, w_t.t(), scale_a=g_inv, scale_b=w_inv,
                                  out_dtype=grad.dtype)
            return dx[:flat.shape[0]].reshape(*grad.shape[:-1], dx.shape[-1]), None, None, None

    class FrozenFloat8Linear(torch.nn.Module):
        """A frozen nn.Linear (no bias) in float8 e4m3: W [out, in] and W^T, each row-major,
        which is what torch._scaled_mm's second operand needs for y = x W^T and dx = g W."""

        def __init__(self, linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            w, w_inv = to_fp8(linear.weight.detach(), torch.float8_e4m3fn, E4M3_MAX)
            self.register_buffer("w", w)
            self.register_buffer("w_t", w.t().contiguous())
            self.register_buffer("w_inv", w_inv)

        def forward(self, x):
            return FrozenMatmul.apply(x, self.w, self.w_inv, self.w_t)

    swapped = 0
    for name, module in _base_projections(model):
        if module.bias is not None:
            continue
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        parent.base_layer = FrozenFloat8Linear(module)
        swapped += 1
    torch.cuda.empty_cache()
    return f"{swapped} base projections -> FP8 (torch._scaled_mm, weights cast once, no weight grad)"


def compile_layers(model) -> str:
    """torch.compile on each decoder layer, not the whole model (whose compile failed with
    per-row attention: benchmarks/results/torch_compile_huggingface/). The attention is kept out
    of the graphs: its row bounds are a host read and a cache that would force a recompile at
    every new micro-batch. Inductor can then fuse what lies between the GEMMs (residual adds,
    the layout copies around attention, the LoRA branch's scaling)."""
    import torch
    from transformers import AttentionInterface

    from trainers.train import attention

    AttentionInterface.register(attention.ATTENTION,
                                torch.compiler.disable(attention.per_row_attention))
    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    for layer in layers:
        layer.compile(dynamic=True)
    return f"{len(layers)} decoder layers compiled (dynamic shapes), attention eager"


# techniques that are an environment variable, set in main() before torch is imported
# (an operator's own allocator setting, which speed mode leaves as it is)
ENVIRONMENT = {"default_allocator": ("PYTORCH_ALLOC_CONF", "expandable_segments:False")}


def default_allocator(model) -> str:
    name = ENVIRONMENT["default_allocator"][0]
    return f"{name}={os.environ.get(name)} (set before torch loaded)"


TECHNIQUES = {f.__name__: f for f in (peft_lora, peft_lora_bf16_inputs, per_row_loop,
                                      fp8_tensorwise, fp8_rowwise, fp8_frozen, compile_layers,
                                      default_allocator)}


def apply_after_load(names: list[str], run_dir: Path) -> None:
    """Wrap the Hugging Face provider's load_model: the techniques act on the loaded model."""
    from trainers.train.providers.huggingface import HuggingFaceProvider

    load_model = HuggingFaceProvider.load_model

    def patched(self, cfg):
        model = load_model(self, cfg)
        applied = {name: TECHNIQUES[name](model) for name in names}
        (run_dir / "technique.json").write_text(json.dumps(applied, indent=2))
        print("techniques:", applied, flush=True)
        return model

    HuggingFaceProvider.load_model = patched


def rows_in_order() -> None:
    """Every TrainingArguments (TRL's and Unsloth's configs derive from it) with transformers'
    sequential sampler; the worker's own data order is otherwise untouched."""
    from transformers import TrainingArguments

    post_init = TrainingArguments.__post_init__

    def patched(self):
        post_init(self)
        self.train_sampling_strategy = "sequential"

    TrainingArguments.__post_init__ = patched


def profile_step(step: int, run_dir: Path) -> None:
    """torch.profiler over one optimizer step, through the telemetry callback's step hooks."""
    import torch
    from trainers.train.telemetry import TelemetryCallback

    begin, end = TelemetryCallback.on_step_begin, TelemetryCallback.on_step_end
    state = {}

    def on_step_begin(self, args, st, control, **kw):
        if st.global_step + 1 == step:
            activities = [torch.profiler.ProfilerActivity.CPU] + (
                [torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            state["prof"] = torch.profiler.profile(activities=activities)
            state["prof"].__enter__()
        return begin(self, args, st, control, **kw)

    def on_step_end(self, args, st, control, **kw):
        result = end(self, args, st, control, **kw)
        if "prof" in state and st.global_step == step:
            prof = state.pop("prof")
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            prof.__exit__(None, None, None)
            table = prof.key_averages()
            text = [f"step {step}", table.table(sort_by="self_cuda_time_total" if torch.cuda.is_available()
                                       else "self_cpu_time_total", row_limit=40),
                    table.table(sort_by="self_cpu_time_total", row_limit=15)]
            (run_dir / f"profile-step{step}.txt").write_text("\n\n".join(text))
        return result

    TelemetryCallback.on_step_begin, TelemetryCallback.on_step_end = on_step_begin, on_step_end


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    names = [n for n in argv[0].split("+") if n != "none"]
    unknown = [n for n in names if n not in TECHNIQUES]
    if unknown:
        print(f"unknown technique(s) {unknown}; known: none, {', '.join(TECHNIQUES)}",
              file=sys.stderr)
        return 2
    for name in names:
        if name in ENVIRONMENT:
            os.environ.setdefault(*ENVIRONMENT[name])
    run_dir = Path(argv[1]).resolve()
    if json.loads((run_dir / "config.json").read_text()).get("provider") == "unsloth":
        import unsloth  # noqa: F401 - first, as the worker imports it: it patches what follows
    apply_after_load(names, run_dir)
    if os.environ.get("ROWS_IN_ORDER") == "1":
        rows_in_order()
    if os.environ.get("PROFILE_STEP"):
        profile_step(int(os.environ["PROFILE_STEP"]), run_dir)
    from trainers.train.worker import run

    return run(run_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
