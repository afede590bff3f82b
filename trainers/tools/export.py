"""Merge a run's LoRA adapter into its base model and save a full 16-bit model directory;
optionally convert it to GGUF (llama.cpp, Ollama, LM Studio) with an Ollama Modelfile beside it.

    python -m trainers.tools.export RUN_DIR [--out DIR] [--dtype float16|bfloat16] [--push-to-hub REPO]
    python -m trainers.tools.export RUN_DIR --gguf q8_0     # also RUN_DIR/gguf/q8_0/*.gguf

The dashboard runs this in its own process (torch never loads into the server). It prints one
JSON object per line: {"stage": ..., "message": ...} as it goes, {"done": true, "out_dir": ...}
at the end, or {"error_type", "message", "hint"} with exit code 1. The merge runs on the CPU so
it never competes with a training job for GPU memory; the base model is loaded in 16 bits even
for a QLoRA run (merging into 4-bit weights would lose precision).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from trainers.errors import ModelForgeError
from trainers.tools.playground import adapter_dir, emit, emit_failure

MERGED_DIR = "merged"
DTYPES = ("float16", "bfloat16")


class ExportError(ModelForgeError):
    error_type = "export"


def merge(run_dir: Path, out_dir: Path | None = None, dtype: str = "float16") -> Path:
    """Write base + adapter, merged, to out_dir (default RUN_DIR/merged); return it."""
    import torch

    from trainers.train.providers import get_provider

    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not a 16-bit type.", f"Use one of {DTYPES}.")
    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    adapter = adapter_dir(run_dir)
    out_dir = out_dir or run_dir / MERGED_DIR
    emit({"stage": "load", "message": f"loading {cfg['model_name']} in {dtype} on the CPU"})
    model, tokenizer = get_provider(cfg.get("provider", "huggingface")).load_for_inference(
        cfg["model_name"], adapter, getattr(torch, dtype), bool(cfg.get("trust_remote_code")))
    emit({"stage": "merge", "message": f"merging the adapter from {adapter}"})
    merged = model.merge_and_unload()
    emit({"stage": "save", "message": f"saving to {out_dir}"})
    merged.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "MODELFORGE_EXPORT.json").write_text(json.dumps(
        {"run": run_dir.name, "base_model": cfg["model_name"], "adapter": str(adapter),
         "dtype": dtype}, indent=2))
    return out_dir


GGUF_DIR = "gguf"


def base_model_config(run_dir: Path) -> dict:
    """The run's base model config.json, read without loading the weights."""
    from transformers import AutoConfig

    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    return AutoConfig.from_pretrained(
        cfg["model_name"], trust_remote_code=bool(cfg.get("trust_remote_code"))).to_dict()


def export_gguf(run_dir: Path, merged_dir: Path, gguf_type: str) -> Path:
    """RUN_DIR/gguf/TYPE/NAME-TYPE.gguf and its Ollama Modelfile, from the merged model."""
    from trainers.tools.gguf_export import ollama_modelfile, write_gguf

    out_dir = run_dir / GGUF_DIR / gguf_type
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{run_dir.name}-{gguf_type}.gguf"
    emit({"stage": "gguf", "message": f"converting to GGUF {gguf_type}: {path}"})
    facts = write_gguf(merged_dir, path, gguf_type, run_dir.name)
    emit({"stage": "gguf", "message": f"{facts['architecture']} tensors "
                                      f"{facts['tensor_types']}, pre-tokenizer "
                                      f"{facts['pre_tokenizer']}"})
    (out_dir / "Modelfile").write_text(ollama_modelfile(path.name, merged_dir),
                                       encoding="utf-8")
    return path


def hub_token() -> str:
    """The Hub token, or an error that says how to give one and that a network is needed."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ExportError("Cannot push to the Hub: HF_HUB_OFFLINE is set, so this server "
                          "works offline.",
                          "Copy the merged directory to a machine with a network and run "
                          "`hf upload REPO DIR` there, or unset HF_HUB_OFFLINE.")
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ExportError("Cannot push to the Hub: no Hugging Face token.",
                          "Set HF_TOKEN in the server's environment (a token with write "
                          "access) or run `hf auth login`, then export again.")
    return token


def push(out_dir: Path, repo_id: str, private: bool = True) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=hub_token())
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(out_dir), repo_id=repo_id)
    except Exception as exc:  # noqa: BLE001 - network and permission errors, said plainly
        raise ExportError(f"Pushing {out_dir} to {repo_id} failed: {exc}",
                          "Check the network, the token's write access and the repo id "
                          "(user-or-org/name).") from exc
    return f"https://huggingface.co/{repo_id}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.tools.export", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--dtype", default="float16", choices=DTYPES)
    parser.add_argument("--push-to-hub", metavar="REPO_ID")
    parser.add_argument("--public", action="store_true", help="create a public Hub repo")
    parser.add_argument("--gguf", metavar="TYPE", help="also write a GGUF file of this type "
                        "(f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0) and an Ollama Modelfile")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    try:
        if args.push_to_hub:
            hub_token()  # fail before the slow merge, not after it
        if args.gguf:  # a type or family the converter does not know: refused before the merge
            from trainers.tools.gguf_export import check_family, check_type

            check_type(args.gguf)
            check_family(base_model_config(run_dir))
        dtype = "bfloat16" if args.gguf == "bf16" else args.dtype
        out_dir = merge(run_dir, args.out, dtype)
        result = {"done": True, "out_dir": str(out_dir)}
        if args.gguf:
            result["gguf"] = str(export_gguf(run_dir, out_dir, args.gguf))
        if args.push_to_hub:
            emit({"stage": "push", "message": f"uploading to {args.push_to_hub}"})
            result["url"] = push(out_dir, args.push_to_hub, private=not args.public)
        emit(result)
        return 0
    except Exception as exc:  # noqa: BLE001 - the caller shows it; nothing is hidden
        emit_failure(exc)
    return 1


if __name__ == "__main__":
    sys.exit(main())
