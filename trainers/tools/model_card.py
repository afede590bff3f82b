"""A run's LoRA adapter as a Hugging Face-ready folder: the adapter and tokenizer files with a
model card (README.md: base model, data, settings, final losses, how to load it).

    python -m trainers.tools.model_card RUN_DIR [--out DIR]     (or: modelforge export-adapter)

Needs no network, no GPU and no torch: it reads the run's config.json and events.jsonl and
copies files. The folder can be uploaded as it is (`hf upload REPO DIR`, which
needs a network and a token); the adapter download of the API and the dashboard is this
folder, zipped. PEFT's own template card (mostly "More Information Needed") is replaced, and
`training_args.bin` (a pickle that loading the adapter does not need) is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from trainers.errors import ModelForgeError
from trainers.events import read_events, terminal_event

HF_ADAPTER_DIR = "hf_adapter"
LEFT_OUT = ("README.md", "training_args.bin")


class CardError(ModelForgeError):
    error_type = "export"


class LinkedAdapter(CardError):
    error_type = "path_not_allowed"


def _adapter_of(run_dir: Path, summary: dict) -> Path:
    path = Path(summary.get("adapter_dir") or run_dir / "adapter")
    if path.is_symlink():  # os.walk would list the link's target: a folder anywhere
        raise LinkedAdapter(f"Run {run_dir.name}'s adapter folder {path} is a symbolic link; "
                            "it is not packed or exported.",
                            "Replace the link with the adapter's own folder.")
    if not (path / "adapter_config.json").is_file():
        raise CardError(f"Run {run_dir.name} saved no adapter (looked in {path}).",
                        "Only succeeded runs, and runs stopped gracefully, have one.")
    return path


def _fmt(value, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _is_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()


def render_card(run_dir: str | Path, name: str | None = None) -> str:
    """The model card of a run that saved an adapter."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    events = read_events(run_dir)
    final = terminal_event(events) or {}
    if final.get("type") not in ("finished", "stopped"):
        raise CardError(f"Run {run_dir.name} has not finished training (no finished or stopped "
                        "event).", "Wait until it has finished.")
    started = next((e for e in events if e["type"] == "started"), {})
    adapter = _adapter_of(run_dir, final)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    base = config["model_name"]
    local_base = _is_local(base)
    dataset = config["dataset"]
    local_data = _is_local(dataset)
    strategy = config.get("strategy", "sft")
    title = name or config.get("name") or run_dir.name

    front = ["---", "library_name: peft", "pipeline_tag: text-generation" if not
             started.get("seq2seq") else "pipeline_tag: text2text-generation"]
    if not local_base:
        front.append(f"base_model: {base}")
    if not local_data:
        front += ["datasets:", f"- {dataset}"]
    tags = ["modelforge", "lora", strategy, "trl", "peft"] + \
        (["unsloth"] if config.get("provider") == "unsloth" else [])
    front += ["tags:", *(f"- {t}" for t in tags), "---", ""]

    lines = [f"# {title}", "",
             f"A LoRA adapter for `{base}`, trained with ModelForge ({config.get('provider')} "
             f"provider, strategy `{strategy}`) from run `{run_dir.name}`"
             + (f", which resumed run `{config['resume_from']}`" if config.get("resume_from")
                else "") + ".", ""]
    if final.get("type") == "stopped":
        lines += [f"Training was **stopped early** at step {final.get('steps')} of "
                  f"{final.get('total_steps')}.", ""]
    lines += ["## Base model", "",
              f"`{base}`" + (" (a local folder on the training machine: give the same weights "
                             "when loading this adapter elsewhere)" if local_base else
                             " on the Hugging Face Hub") + ".", ""]
    lines += ["## Data", "",
              f"- data set: `{dataset}`" + (" (a local file)" if local_data else ""),
              f"- format: {started.get('data_format', '-')}, {started.get('num_examples', '-')} "
              f"examples: {started.get('num_train', '-')} for training, "
              f"{started.get('num_eval', '-')} held out for evaluation "
              f"(eval_split {config.get('eval_split')})",
              f"- max_seq_length: {final.get('max_seq_length') or config.get('max_seq_length')}"
              f"; completion-only loss: {config.get('completion_only_loss')}", ""]
    settings = [("strategy", strategy), ("provider", config.get("provider")),
                ("LoRA r / alpha / dropout", f"{adapter_config.get('r')} / "
                 f"{adapter_config.get('lora_alpha')} / {adapter_config.get('lora_dropout')}"),
                ("target modules", ", ".join(sorted(adapter_config.get("target_modules") or []))),
                ("4-bit base (QLoRA)", config.get("use_4bit")),
                ("learning rate", f"{config.get('learning_rate')} ({config.get('lr_scheduler_type')}"
                                  f", warmup ratio {config.get('warmup_ratio')})"),
                ("batch", f"{config.get('per_device_train_batch_size')} x "
                          f"{config.get('gradient_accumulation_steps')} accumulation x "
                          f"{final.get('world_size') or 1} process(es)"),
                ("epochs / max_steps", f"{config.get('num_train_epochs')} / "
                                       f"{config.get('max_steps')}"),
                ("optimizer", config.get("optim")),
                ("precision", "bf16" if config.get("bf16") else "fp16" if config.get("fp16")
                 else started.get("dtype", "float32")),
                ("seed", config.get("seed"))]
    if strategy == "dpo":
        settings += [("beta", config.get("beta")), ("DPO loss", config.get("dpo_loss_type"))]
    lines += ["## Training settings", "", "| setting | value |", "|---|---|",
              *(f"| {k} | {_fmt(v)} |" for k, v in settings), ""]
    results = [("steps", f"{final.get('steps')} / {final.get('total_steps')}"),
               ("first / final training loss", f"{_fmt(final.get('first_loss'))} / "
                                               f"{_fmt(final.get('final_loss'))}"),
               ("mean training loss", _fmt(final.get("train_loss"))),
               ("final eval loss", _fmt(final.get("final_eval_loss"))),
               ("best eval loss", f"{_fmt(final.get('best_eval_loss'))} at step "
                                  f"{final.get('best_eval_step')}"
                if final.get("best_eval_loss") is not None else "-"),
               ("training time", f"{_fmt(final.get('train_runtime_s'), 3)} s"),
               ("tokens/s", _fmt(final.get("tokens_per_s"), 6)),
               ("device", f"{started.get('device_name') or '-'} ({started.get('device', '-')})")]
    if strategy == "dpo":
        results += [("final reward margin", _fmt(final.get("final_rewards_margins"))),
                    ("final reward accuracy", _fmt(final.get("final_rewards_accuracies")))]
    versions = started.get("versions") or {}
    lines += ["## Results", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in results), "",
              "Library versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())
                                               if v and k in ("torch", "transformers", "peft",
                                                              "trl") or
                                               (k == "unsloth" and config.get("provider") ==
                                                "unsloth" and v)), ""]
    loader = "AutoModelForSeq2SeqLM" if started.get("seq2seq") else "AutoModelForCausalLM"
    lines += ["## Use it", "", "```python",
              f"from peft import PeftModel",
              f"from transformers import {loader}, AutoTokenizer", "",
              f"base = {loader}.from_pretrained({base!r})",
              "model = PeftModel.from_pretrained(base, \"path/to/this/folder\")",
              "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")", "```", "",
              "Upload this folder to the Hub with `hf upload USER/REPO .` (needs a "
              "network and a token with write access).", ""]
    return "\n".join(front + lines)


def hf_adapter_files(run_dir: str | Path, name: str | None = None) -> dict[str, Path | str]:
    """{name in the folder: file to copy, or text}: the adapter's plain files (no symlinks,
    none of LEFT_OUT) and README.md, the model card."""
    run_dir = Path(run_dir)
    final = terminal_event(read_events(run_dir)) or {}
    adapter = _adapter_of(run_dir, final)
    files: dict[str, Path | str] = {}
    for root, _, names in os.walk(adapter):  # never follows a linked folder
        for file in sorted(names):
            path = Path(root) / file
            rel = path.relative_to(adapter).as_posix()
            if rel not in LEFT_OUT and path.is_file() and not path.is_symlink():
                files[rel] = path
    files["README.md"] = render_card(run_dir, name)
    return files


def export_adapter(run_dir: str | Path, out_dir: str | Path | None = None,
                   name: str | None = None) -> Path:
    """Write the Hugging Face-ready folder (default RUN_DIR/hf_adapter, replaced if there)."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / HF_ADAPTER_DIR
    files = hf_adapter_files(run_dir, name)
    if out_dir and out.exists() and any(out.iterdir()):
        raise CardError(f"{out} exists and is not empty.", "Give a new or empty folder.")
    if not out_dir and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for rel, value in files.items():
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, Path):
            shutil.copyfile(value, dest)
        else:
            dest.write_text(value, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.tools.model_card",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="a new or empty folder (default "
                                                 "RUN_DIR/hf_adapter)")
    args = parser.parse_args(argv)
    try:
        out = export_adapter(args.run_dir.resolve(), args.out)
    except (ModelForgeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"adapter folder with model card: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
