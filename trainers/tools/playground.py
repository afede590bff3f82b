"""Generate from a prompt with a run's adapter and with its base model, streamed.

The dashboard runs this in its own process, so torch never loads into the server:

    echo '{"prompt": "Hello", "max_new_tokens": 64}' | python -m trainers.tools.playground RUN_DIR

It prints one JSON object per line: {"model": "adapter" | "base", "text": "<new chunk>"} while
generating, {"model": ..., "done": true, "chunks": n, "seconds": s} after each model, and
{"error_type", "message", "hint"} (exit code 1) when something is wrong. The base model's
answer comes from the same weights with the adapter switched off, so the two differ only by
what the run learned.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from trainers.errors import ModelForgeError


class PlaygroundError(ModelForgeError):
    error_type = "playground"


def adapter_dir(run_dir: Path) -> Path:
    """Where the run saved its adapter (its finished event says; output_dir may move it)."""
    from trainers.events import read_events, terminal_event

    last = terminal_event(read_events(run_dir))
    if last is None or last["type"] == "failed" or not last.get("adapter_dir"):
        raise PlaygroundError(f"Run {run_dir.name} has no saved adapter.",
                              "Pick a run that succeeded (or was stopped after saving).")
    path = Path(last["adapter_dir"])
    if not (path / "adapter_config.json").is_file():
        raise PlaygroundError(f"The adapter directory {path} has no adapter_config.json.",
                              "It was moved or deleted: train the run again.")
    return path


def load(run_dir: Path):
    """The base model with the run's adapter attached (PEFT), and the tokenizer, as the run's
    provider reloads them (a seq2seq model for T5/BART runs, a causal LM otherwise)."""
    import torch

    from trainers.train.providers import get_provider

    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    cuda = torch.cuda.is_available()
    dtype = (torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16) \
        if cuda else torch.float32
    model, tokenizer = get_provider(cfg.get("provider", "huggingface")).load_for_inference(
        cfg["model_name"], adapter_dir(run_dir), dtype, bool(cfg.get("trust_remote_code")))
    model.to("cuda" if cuda else "cpu").eval()
    return model, tokenizer


def stream(model, tokenizer, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
           use_adapter: bool = True, seed: int = 0) -> Iterator[str]:
    """New text chunks as the model generates them (greedy when temperature is 0)."""
    import torch
    from transformers import TextIteratorStreamer

    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = dict(do_sample=True, temperature=temperature) if temperature > 0 else \
        dict(do_sample=False)
    kwargs = dict(**inputs, max_new_tokens=max_new_tokens, streamer=streamer,
                  pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **sampling)
    errors: list[BaseException] = []

    def generate() -> None:
        torch.manual_seed(seed)
        try:
            with torch.inference_mode():
                if use_adapter:
                    model.generate(**kwargs)
                else:
                    with model.disable_adapter():
                        model.generate(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=generate, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if errors:
        raise errors[0]


# End-of-text markers that data sets carry as plain text (the bundled sample data ends every
# completion with "<|endoftext|>"), so a tokenizer that does not know them as special tokens
# decodes them as words: the answer ends there, and no marker is shown.
END_MARKERS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>",
               "</s>", "<eos>")


def special_texts(tokenizer) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(markers that end the answer, special tokens that are dropped where they appear)."""
    eos = getattr(tokenizer, "eos_token", None)
    stop = tuple(dict.fromkeys([*END_MARKERS, *([eos] if eos else [])]))
    specials = getattr(tokenizer, "all_special_tokens", None) or []
    drop = tuple(t for t in specials if t and t not in stop)
    return stop, drop


def without_special(chunks: Iterator[str], stop: tuple[str, ...],
                    drop: tuple[str, ...] = ()) -> Iterator[str]:
    """The text of `chunks` up to the first end marker, special tokens removed. A chunk that
    may be the start of a marker split over chunks ("<|", "endoftext|>") is held back until it
    is known. The chunks after a marker are read (the generating thread must finish) but not
    shown."""
    markers = stop + drop
    pending, ended = "", False
    for chunk in chunks:
        if ended:
            continue
        pending += chunk
        for token in drop:
            pending = pending.replace(token, "")
        cut = min((pending.find(m) for m in stop if m in pending), default=-1)
        if cut >= 0:
            ended = True
            if pending[:cut]:
                yield pending[:cut]
            continue
        hold = max((n for m in markers for n in range(1, len(m)) if pending.endswith(m[:n])),
                   default=0)
        if len(pending) > hold:
            yield pending[:len(pending) - hold]
            pending = pending[len(pending) - hold:]
    if not ended and pending:
        yield pending


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def emit_failure(exc: Exception) -> None:
    """A one-shot tool's failure as its last JSON line: a typed error, or the diagnosis."""
    if isinstance(exc, ModelForgeError):
        emit(exc.to_dict())
        return
    from trainers.diagnostics import diagnose_exception

    emit(diagnose_exception(exc))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m trainers.tools.playground RUN_DIR  (JSON request on stdin)",
              file=sys.stderr)
        return 2
    try:
        request = json.loads(sys.stdin.read() or "{}")
        prompt = str(request.get("prompt", ""))
        if not prompt.strip():
            raise PlaygroundError("The prompt is empty.", "Type a prompt first.")
        model, tokenizer = load(Path(argv[0]).resolve())
        for which in ("adapter", "base"):
            started, n = time.perf_counter(), 0
            chunks = stream(model, tokenizer, prompt, int(request.get("max_new_tokens", 64)),
                            float(request.get("temperature", 0.0)), which == "adapter")
            for chunk in without_special(chunks, *special_texts(tokenizer)):
                n += 1
                emit({"model": which, "text": chunk})
            emit({"model": which, "done": True, "chunks": n,
                   "seconds": round(time.perf_counter() - started, 3)})
        return 0
    except Exception as exc:  # noqa: BLE001 - the caller shows it; nothing is hidden
        emit_failure(exc)
    return 1


if __name__ == "__main__":
    sys.exit(main())
