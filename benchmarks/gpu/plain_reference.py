"""The same training as one benchmark variant, written as a plain script without the engine.

It shows that the engine adds no overhead of its own: the tokens/s measured here, with the
library calls written out by hand (transformers + PEFT + TRL, or Unsloth + TRL), is compared
with the tokens/s the engine reported for the same provider and mode in the same run directory.

  python benchmarks/gpu/plain_reference.py RUN_DIR PROVIDER MODE [OUT_JSON]

RUN_DIR is a finished benchmark's directory: its results.json (the spec, every default filled
in, and the engine's numbers) and prepared.json (the model directory and the rows in training
order) are read, so the data, the model and every setting are the engine's. Llama-family
models (the target modules are written out), padded batches. Nothing from the `trainers`
package is imported, except on a machine
without a GPU (TRL's LM head needs a stand-in there; see trainers/train/trl_cpu.py).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

LLAMA_LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def load_hf(model_dir: str, spec: dict, mode: str):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {"dtype": torch.bfloat16, "attn_implementation": "sdpa"}
    if mode == "qlora4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if mode == "qlora4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                      target_modules=LLAMA_LINEAR, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def load_unsloth(model_dir: str, spec: dict, mode: str):
    import torch
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        model_name=model_dir, max_seq_length=spec["max_seq_length"], dtype=torch.bfloat16,
        load_in_4bit=mode == "qlora4", random_state=spec["seed"])
    return FastLanguageModel.get_peft_model(
        model, r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
        target_modules=LLAMA_LINEAR, bias="none", random_state=spec["seed"],
        use_gradient_checkpointing="unsloth", max_seq_length=spec["max_seq_length"])


def sft_config(spec: dict, output_dir: str):
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=output_dir, max_steps=spec["warmup_steps"] + spec["steps"],
        per_device_train_batch_size=spec["batch_size"], gradient_accumulation_steps=1,
        learning_rate=spec["learning_rate"], lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, optim=spec["optimizer"], bf16=True,
        gradient_checkpointing=spec["gradient_checkpointing"],
        gradient_checkpointing_kwargs={"use_reentrant": False}, seed=spec["seed"],
        data_seed=spec["seed"], logging_steps=1, logging_first_step=True, save_strategy="no",
        report_to="none", disable_tqdm=True, include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False, max_length=spec["max_seq_length"], packing=False,
        padding_free=False, completion_only_loss=spec["completion_only_loss"],
        dataset_num_proc=None, train_sampling_strategy="sequential",
        use_cpu=not torch.cuda.is_available())


def step_marks_callback():
    import torch
    from transformers import TrainerCallback

    class Marks(TrainerCallback):
        def __init__(self):
            self.marks = []

        def _now(self):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks = [self._now()]

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(self._now())

    return Marks()


def engine_number(summary: dict, provider: str, mode: str) -> dict | None:
    runs = [r for r in summary["runs"] if r["provider"] == provider and r["mode"] == mode
            and r["status"] == "ok"]
    if not runs:
        return None
    speeds = [r["timing"]["tokens_per_s"] for r in runs]
    return {"tokens_per_s": statistics.fmean(speeds), "runs": speeds}


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    run_dir, provider, mode = Path(argv[0]), argv[1], argv[2]
    summary = json.loads((run_dir / "results.json").read_text())
    spec = summary["spec"]  # the engine's spec with every default filled in
    prepared = json.loads((run_dir / "prepared.json").read_text())
    if provider == "unsloth":
        if spec["padding"] == "padded":  # as the engine runs it
            os.environ["UNSLOTH_DISABLE_AUTO_PADDING_FREE"] = "1"
        import unsloth  # noqa: F401 - first, as Unsloth requires
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(prepared["tokenizer_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = (load_unsloth if provider == "unsloth" else load_hf)(prepared["model_dir"], spec, mode)
    if provider == "huggingface" and not torch.cuda.is_available():
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from trainers.train.trl_cpu import use_torch_lm_head_without_gpu

        use_torch_lm_head_without_gpu()
    marks = step_marks_callback()
    trainer = SFTTrainer(model=model, args=sft_config(spec, str(run_dir / f"plain-{provider}")),
                         processing_class=tokenizer,
                         train_dataset=Dataset.from_list(prepared["rows"]), callbacks=[marks])
    trainer.train()
    times = [b - a for a, b in zip(marks.marks, marks.marks[1:])]
    warmup, batch = spec["warmup_steps"], spec["batch_size"]
    lengths = [len(r["input_ids"]) for r in prepared["rows"]]
    tokens = [sum(lengths[i * batch:(i + 1) * batch]) for i in range(warmup, len(times))]
    plain = statistics.fmean(tokens) / statistics.median(times[warmup:])
    engine = engine_number(summary, provider, mode)
    result = {"provider": provider, "mode": mode, "plain_tokens_per_s": plain,
              "plain_step_times_s": times, "engine": engine,
              "unsloth_in_process": "unsloth" in sys.modules,
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30
              if torch.cuda.is_available() else None,
              "command": " ".join([sys.executable, *sys.argv])}
    if engine:
        result["engine_vs_plain_pct"] = 100 * (engine["tokens_per_s"] / plain - 1)
    text = json.dumps(result, indent=2)
    if len(argv) == 4:
        Path(argv[3]).write_text(text)
    print(f"plain {provider} {mode}: {plain:,.0f} tokens/s; engine: "
          f"{engine['tokens_per_s']:,.0f} tokens/s ({result['engine_vs_plain_pct']:+.2f}%)"
          if engine else f"plain {provider} {mode}: {plain:,.0f} tokens/s; no engine number")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1:]))
