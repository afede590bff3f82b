"""What a benchmark compares: one schema for the CLI, the API, the dashboard and config.json.

Everything that makes the comparison matched is here once and given to every variant alike:
the same tokenized examples in the same order, seed, LoRA rank/alpha/targets (dropout 0),
optimizer, gradient checkpointing and padding treatment. The fields a training run has too
(LoRA, learning rate, seed, sequence length, data) take their type, description and rules from
TrainConfig; their defaults are the benchmark's own, so committed results stay reproducible.
Importing this is cheap (pydantic only).
"""

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainers.config import TrainConfig, config_field, field_problems, plain_problem
from trainers.errors import ConfigError

PROVIDERS = ("huggingface", "unsloth")
MODES = ("lora16", "qlora4")
MODE_LABELS = {"lora16": "16-bit LoRA", "qlora4": "QLoRA 4-bit"}
GPU_ONLY_MODES = {"qlora4": "QLoRA 4-bit loads the base model with bitsandbytes, which needs "
                            "a CUDA GPU"}
PADDING = ("padded", "padding_free", "as_shipped", "best")
PADDING_FREE = ("padding_free", "best")  # the paddings that concatenate rows for both providers
SAMPLE_DATASET = "sample"


def _field(default, description: str, **kwargs):
    return Field(default, description=description, **kwargs)


class BenchmarkSpec(BaseModel):
    """A matched benchmark. Unknown keys are rejected, never dropped."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # --- model ---------------------------------------------------------------------------
    model: str = _field(
        ..., "A local model directory, a hub id, or (with synthetic_weights) an architecture "
             "such as llama-3.2-1b or meta-llama/Llama-3.2-3B.",
        json_schema_extra={"path": "model"})
    synthetic_weights: bool = _field(
        False, "Random-init weights from the architecture's public config.json values: no "
               "download. Speed and memory are real; the loss values are not a model's.")
    tokenizer: str = _field(
        "", "Tokenizer directory or hub id; empty = the model's own (with synthetic weights: "
            "the bundled demo tokenizer, ids 0-2047).", json_schema_extra={"path": "model"})

    # --- what is compared ----------------------------------------------------------------
    providers: list[Literal["huggingface", "unsloth"]] = _field(
        ["huggingface", "unsloth"], "Providers to compare; huggingface is the baseline.")
    modes: list[Literal["lora16", "qlora4"]] = _field(
        ["lora16", "qlora4"], "lora16: LoRA on a 16-bit base model. qlora4: LoRA on a 4-bit "
                              "NF4 base model (bitsandbytes, needs a CUDA GPU).")
    precision: Literal["bf16", "fp16"] = _field(
        "bf16", "Compute precision (fp16 only for GPUs without bf16).")
    padding: Literal["padded", "padding_free", "as_shipped", "best"] = _field(
        "padded", "The comparison. padded: every batch padded to its longest row, for both "
                  "providers (matched). padding_free: rows concatenated without padding, for "
                  "both (matched). as_shipped: each library's own defaults (Unsloth turns "
                  "padding-free on). best: each provider at its best: padding-free, no gradient "
                  "checkpointing where the VRAM estimate says it fits, Liger kernels for "
                  "Hugging Face where installed. as_shipped and best are labelled not matched.")

    # --- shape and length ----------------------------------------------------------------
    max_seq_length: config_field("max_seq_length", "A benchmark needs a fixed length.") = 2048
    batch_size: int = _field(8, "Rows per optimizer step (no gradient accumulation).")
    steps: int = _field(30, "Measured steps, after the warm-up steps.")
    warmup_steps: int = _field(
        10, "Steps run first and left out of the measured numbers (compilation, caches; "
            "Unsloth's compiled blocks settle over about 10 steps of rows of varying length).")
    repeats: int = _field(2, "How many times each provider x mode runs; repeats further apart "
                             "than 5% are flagged.")

    # --- data ----------------------------------------------------------------------------
    dataset: config_field("dataset", "Or \"sample\": the bundled instructions. A benchmark "
                                     "needs supervised examples.") = SAMPLE_DATASET
    column_mapping: config_field("column_mapping") = {}
    min_example_tokens: int = _field(
        0, "Leave out examples shorter than this many tokens (to measure long sequences).")
    completion_only_loss: config_field("completion_only_loss") = True

    # --- training settings shared by every variant ---------------------------------------
    lora_r: config_field("lora_r") = 16
    lora_alpha: config_field("lora_alpha", "LoRA dropout is always 0 in a benchmark.") = 32
    target_modules: config_field("target_modules") = "auto"
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit",
                       "sgd"] = _field("adamw_torch_fused", "Optimizer, the same for every run.")
    learning_rate: config_field("learning_rate", "Constant in a benchmark.") = 2e-4
    gradient_checkpointing: config_field(
        "gradient_checkpointing", "Each provider uses its own implementation.") = True
    seed: config_field("seed", "It seeds the synthetic weights too.") = 42
    attention: config_field(
        "attention", "In a benchmark: the huggingface variants and the plain script's "
                     "huggingface run; Unsloth's use its own. sdpa_per_row needs padding "
                     "padding_free or best.") = "sdpa"

    liger_kernel: config_field(
        "liger_kernel", "In a benchmark: the huggingface variants and the plain script's "
                        "huggingface run (padding \"best\" decides it itself).") = False
    torch_compile: bool = _field(
        False, "Hugging Face variants and the plain script's huggingface run: "
               "TrainingArguments(torch_compile=True), the model compiled by torch.compile "
               "(Unsloth compiles its own blocks). Varying row lengths recompile it; the trust "
               "checks flag a compile in a measured step. With torch 2.11 on an H200 it failed "
               "with attention sdpa_per_row and compiled for over a minute per new shape on "
               "padding-free batches (benchmarks/results/torch_compile_huggingface/).")

    # --- judging -------------------------------------------------------------------------
    loss_rel_tolerance: float = _field(
        0.01, "First-step losses (before any update) must agree within this relative "
              "difference, else the runs are flagged not matched.")
    peak_tflops: Optional[float] = _field(
        None, "The GPU's dense peak for the precision, in TFLOP/s, for MFU; empty = "
              "MODELFORGE_PEAK_TFLOPS if set (as for training runs), else the built-in table "
              "by GPU name.")
    variant_timeout_s: int = _field(1800, "A variant running longer is stopped and failed.")
    cudnn_attention: bool = _field(
        False, "Let PyTorch's SDPA use cuDNN's attention kernels. Off by default, for every "
               "variant and the plain script (torch.backends.cuda.enable_cudnn_sdp(False)): on "
               "an H200 with torch 2.11 SDPA picks cuDNN for padded batches, which spends ~2 s "
               "of host time building kernels at some new batch shapes, in any process, and "
               "ran 20% slower than the kernel SDPA picks without it (docs/benchmarking.md).")
    fresh_compile_caches: bool = _field(
        True, "Give every measured process (variants and plain script runs) its own empty "
              "Triton and Inductor disk caches, so that no run finds kernels an earlier one "
              "compiled: a recompile inside the measured steps (Unsloth's compiled blocks at a "
              "new shape) then costs every run the same, whatever the order.")
    warm_libraries: bool = _field(
        True, "Read the CUDA libraries' files into the OS page cache before the first variant, "
              "so no variant waits for the disk when it first launches a kernel (on a fresh "
              "machine that would be the baseline's first run). Recorded in the results.")
    check_plain: bool = _field(
        False, "Also run a plain script of the bare libraries (written to RUN_DIR/plain/) per "
               "provider and mode on the same rows, after the engine's first round of repeats, "
               "and report engine/plain tokens/s (flagged outside 0.95-1.05).")
    plain_repeats: int = _field(
        1, "With check_plain, how many times the plain script runs per provider and mode: once "
           "after each of the engine's first plain_repeats rounds. 2 or more shows the plain "
           "script's own spread, so a ratio outside the band can be told from noise.")

    # --- labels --------------------------------------------------------------------------
    name: config_field("name") = ""
    invocation: str = _field("", "The command that started the benchmark (filled by the CLI).")

    @field_validator("providers", "modes")
    @classmethod
    def _unique_non_empty(cls, value: list) -> list:
        if not value:
            raise ValueError("must name at least one")
        if len(set(value)) != len(value):
            raise ValueError(f"lists {value} with a repeat: name each once")
        return value

    @model_validator(mode="after")
    def _check_rules(self) -> "BenchmarkSpec":
        problems = field_problems(self, shared_fields()) + \
            [{"field": f, "message": m} for f, ok, m in _RULES if not ok(self)]
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.steps

    def variants(self) -> list[tuple[int, str, str]]:
        """The engine's (repeat, mode, provider) in run order: providers alternate, so drift
        hits both."""
        return [(r, m, p) for kind, r, m, p in self.run_order() if kind == "engine"]

    def run_order(self) -> list[tuple[str, int, str, str]]:
        """("engine" or "plain", repeat, mode, provider) in run order: the plain script's
        repeat r follows the engine's round r, so the two sides alternate in time as the
        providers do, and a run cut short by a time limit costs an engine repeat first."""
        order = []
        for repeat in range(1, self.repeats + 1):
            round_ = [(repeat, m, p) for m in self.modes for p in self.providers]
            order += [("engine", *v) for v in round_]
            if self.check_plain and repeat <= self.plain_repeats:
                order += [("plain", *v) for v in round_]
        return order


# The benchmark's own rules (TrainConfig's apply to the shared_fields() as well).
_RULES = [
    ("max_seq_length", lambda s: s.max_seq_length != -1,
     "cannot be -1 in a benchmark: every variant needs the same fixed length, e.g. 2048"),
    ("batch_size", lambda s: s.batch_size >= 1, "must be at least 1"),
    ("steps", lambda s: s.steps >= 1, "must be at least 1 (30 or more gives a stable median)"),
    ("warmup_steps", lambda s: s.warmup_steps >= 0, "must be 0 or more (10 is usual)"),
    ("repeats", lambda s: 1 <= s.repeats <= 10, "must be between 1 and 10"),
    ("plain_repeats", lambda s: 1 <= s.plain_repeats <= s.repeats,
     "must be between 1 and repeats: the plain script runs after a round of the engine's repeats"),
    ("min_example_tokens", lambda s: s.min_example_tokens >= 0, "must be 0 or more"),
    ("loss_rel_tolerance", lambda s: 0 < s.loss_rel_tolerance < 1,
     "must be above 0 and below 1 (0.01 = 1%)"),
    ("peak_tflops", lambda s: s.peak_tflops is None or s.peak_tflops > 0,
     "must be empty or above 0"),
    ("variant_timeout_s", lambda s: s.variant_timeout_s >= 10, "must be at least 10 seconds"),
    ("attention", lambda s: s.attention == "sdpa" or s.padding in PADDING_FREE,
     "sdpa_per_row needs padding-free batches (padded rows would need the mask it leaves out): "
     "set padding to padding_free or best, or attention to sdpa"),
]


# The Benchmark tab's quick setting: a verdict in about two minutes on a 1B model on an H100,
# where the defaults (both modes, 2 repeats, 10 + 30 steps) take several times as long.
QUICK = {"modes": ["lora16"], "repeats": 1, "warmup_steps": 5, "steps": 10}
QUICK_GIVES_UP = ("One run per variant, so no repeat check (a spread between repeats cannot be "
                  "seen); 10 measured steps after 5 warm-up steps, so the median is noisier and "
                  "Unsloth's compiled blocks may not have settled; 16-bit LoRA only (add qlora4 "
                  "under modes to compare 4-bit too).")

def shared_fields() -> list[str]:
    """The fields a training run has too: each is declared with config_field, so it has
    TrainConfig's type, description and rules."""
    return [name for name in BenchmarkSpec.model_fields if name in TrainConfig.model_fields]


def default_modes(has_gpu: bool) -> list[str]:
    """The default modes a machine can run: without a GPU, none of GPU_ONLY_MODES."""
    return [m for m in BenchmarkSpec.model_fields["modes"].default
            if has_gpu or m not in GPU_ONLY_MODES]


GPU_ONLY_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")


def gpu_only_problems(spec: BenchmarkSpec, devices: list[str]) -> list[dict]:
    """The spec's choices that cannot run on a machine without a GPU, refused before the run."""
    if devices != ["cpu"]:
        return []
    problems = [{"field": "modes", "message": f"{mode}: {why}, and this machine has none: "
                 "choose lora16 only"} for mode, why in GPU_ONLY_MODES.items()
                if mode in spec.modes]
    if spec.optimizer in GPU_ONLY_OPTIMIZERS:
        problems.append({"field": "optimizer", "message": f"{spec.optimizer} needs bitsandbytes "
                         "on a CUDA GPU, and this machine has none: use adamw_torch_fused"})
    return problems


def build_spec(data: dict) -> BenchmarkSpec:
    """Validate a dict; raise ConfigError naming every problem and its fix."""
    if not isinstance(data, dict):
        raise ConfigError([{"field": "spec", "message": "must be an object of field: value pairs"}])
    try:
        return BenchmarkSpec(**data)
    except ValidationError as exc:
        raise ConfigError([_problem(err) for err in exc.errors()]) from None


def _problem(err: dict) -> dict:
    return plain_problem(err, list(BenchmarkSpec.model_fields), where="the spec")