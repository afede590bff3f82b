"""The offline demo model: a small Llama-architecture model with a tokenizer trained on the
bundled data, so that everything (training, the dashboard, the tests) works with no network.

`build_demo_model(out)` writes random-init weights in seconds, for tests that only need a model
(loss, adapters, events and timings are real; its generations are noise). The demo that
`modelforge demo-model` and `run --demo` write is `pretrained_demo_model()`: a wider model
pre-trained briefly on the bundled texts, so that a short LoRA run visibly lowers the loss and
changes the Playground's answers. Its weights ship in the package (trainers/demo_model/, written
by `python -m trainers.tools.demo` from the recipe below); only when they do not follow the
current recipe is it pre-trained on the CPU, once, in a cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
SAMPLE_SFT = SAMPLE_DIR / "instructions.jsonl"
SAMPLE_PREFERENCES = SAMPLE_DIR / "preferences.jsonl"
SAMPLE_SUMMARIES = SAMPLE_DIR / "summaries.jsonl"
SHIPPED_DEMO = Path(__file__).resolve().parents[1] / "demo_model"  # package data

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Small enough for CPU tests, big enough that loss visibly falls and Unsloth patches it.
DEMO_SHAPE = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)

# The pre-trained demo, twice as wide as DEMO_SHAPE: pre-trained for the same CPU time (about 90 s),
# the wider model gave the demo config's 60-step LoRA run the larger loss drop (~40%, not ~30%).
PRETRAIN_SHAPE = dict(hidden_size=128, intermediate_size=352)
PRETRAIN = dict(steps=400, batch_size=16, block_size=256, learning_rate=5e-3, warmup_steps=20)
PRETRAIN_SEED = 0
VOCAB_SIZE = 2048
PRETRAIN_TIME = "1-2 minutes on 2 CPU cores"  # what the CLI tells a user who waits for it


def _sample_texts() -> list[str]:
    texts = []
    for path in (SAMPLE_SFT, SAMPLE_PREFERENCES, SAMPLE_SUMMARIES):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            texts.extend(str(v) for v in json.loads(line).values())
    return texts


def build_tokenizer(vocab_size: int = VOCAB_SIZE):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_sample_texts(), trainer=trainer)
    from tokenizers import processors
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", model_max_length=2048)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_demo_model(out_dir: str | Path, seed: int = 0, pretrain_steps: int = 0,
                     **shape) -> Path:
    """Write a tokenizer and a LlamaForCausalLM to out_dir, random-init unless pretrain_steps > 0
    (then pre-trained that many steps on the bundled texts); return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True, **{**DEMO_SHAPE, **shape})
    model = LlamaForCausalLM(config)
    note = "Random-init demo model: the weights are random."
    if pretrain_steps:
        loss = pretrain(model, tokenizer, pretrain_steps, seed)
        note = (f"Demo model pre-trained for {pretrain_steps} steps on the bundled sample texts "
                f"(trainers/sample_data/, last step's loss {loss:.2f}).")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "MODELFORGE_DEMO.txt").write_text(f"{note} Written by `modelforge demo-model`.\n")
    return out


def demo_config(model_dir: str | Path) -> dict:
    """The example config of `modelforge demo-model --config`: the run whose loss drop
    docs/getting_started.md states (60 steps at lr 2e-3; at the 2e-4 default they lower the
    loss only about 18%)."""
    return {"provider": "huggingface", "model_name": str(model_dir), "max_seq_length": 512,
            "task": "text-generation", "strategy": "sft", "dataset": str(SAMPLE_SFT),
            "max_steps": 60, "learning_rate": 2e-3, "lora_r": 16, "lora_alpha": 32}


# --- pre-training ------------------------------------------------------------------------------

def _token_stream(tokenizer, seed: int):
    """Every bundled text as a document (<s> + text), in a seeded shuffle. The shuffle keeps each
    prompt away from its completion: the model learns the language of the data, and the
    prompt -> answer format is left for the fine-tuning to learn."""
    import torch

    texts = _sample_texts()
    random.Random(seed).shuffle(texts)
    ids: list[int] = []
    for text in texts:
        ids += [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids)


def pretrain(model, tokenizer, steps: int, seed: int = 0) -> float:
    """Causal-LM training on random blocks of the token stream, seeded; the last step's loss.
    Reports its step and an estimate of the time left on stderr (it runs for minutes)."""
    import sys
    import time

    import torch

    batch, block = PRETRAIN["batch_size"], PRETRAIN["block_size"]
    stream = _token_stream(tokenizer, seed)
    starts = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["learning_rate"])
    warmup = PRETRAIN["warmup_steps"]
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warmup, then linear decay to 0
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * (1 - s / steps))
    model.train()
    started, every = time.perf_counter(), max(1, steps // 20)
    for step in range(1, steps + 1):
        offsets = torch.randint(0, len(stream) - block, (batch,), generator=starts)
        x = torch.stack([stream[o:o + block] for o in offsets.tolist()])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % every == 0 or step == steps:
            left = (time.perf_counter() - started) / step * (steps - step)
            print(f"pre-training the demo model: step {step}/{steps}, about {left:.0f} s left",
                  file=sys.stderr, flush=True)
    return loss.item()


# --- the cache -----------------------------------------------------------------------------------

def cache_root() -> Path:
    """MODELFORGE_CACHE, else modelforge/ in the user's cache folder (XDG_CACHE_HOME, ~/.cache)."""
    if os.environ.get("MODELFORGE_CACHE"):
        return Path(os.environ["MODELFORGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelforge"


def recipe() -> dict:
    """What the pre-trained demo's weights follow from, as recorded next to the shipped ones. The
    code of `pretrain` is not in it: the slow test that rebuilds the weights guards that."""
    data = hashlib.sha256()
    for path in (SAMPLE_SFT, SAMPLE_PREFERENCES, SAMPLE_SUMMARIES):
        data.update(path.read_bytes())
    return {"shape": {**DEMO_SHAPE, **PRETRAIN_SHAPE}, "pretrain": PRETRAIN,
            "seed": PRETRAIN_SEED, "vocab_size": VOCAB_SIZE, "chat_template": CHAT_TEMPLATE,
            "sample_data_sha256": data.hexdigest()}


def shipped_is_current() -> bool:
    """Do the weights shipped in the package follow the current recipe?"""
    try:
        shipped = json.loads((SHIPPED_DEMO / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return shipped["recipe"] == recipe() and (SHIPPED_DEMO / "model.safetensors").is_file()


def needs_pretraining() -> bool:
    """Will `pretrained_demo_model()` pre-train (minutes) rather than return a ready model?"""
    return not shipped_is_current() and not is_cached()


def pretraining_notice() -> str:
    """What the CLI prints before `pretrained_demo_model()` pre-trains."""
    return (f"the package's demo weights do not follow the recipe in trainers/tools/demo.py: "
            f"pre-training the demo model on the bundled data ({PRETRAIN_TIME}, once: kept in "
            f"{pretrained_demo_path()}) ...")


def pretrained_demo_path() -> Path:
    """The cache folder of a demo pre-trained here. Its name changes with the recipe, so a
    changed recipe builds anew instead of reusing a stale model."""
    digest = hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode())
    return cache_root() / f"demo-model-{digest.hexdigest()[:12]}"


def is_cached() -> bool:
    return (pretrained_demo_path() / "config.json").is_file()


def pretrained_demo_model() -> Path:
    """The shipped pre-trained demo, or, when the recipe changed since it was written, the
    recipe's build in the cache (pre-trained on first use)."""
    return SHIPPED_DEMO if shipped_is_current() else build_in_cache()


def build_in_cache() -> Path:
    """Pre-train the demo into the cache unless it is there. A process that finds another one
    building waits for that build (a lock file) instead of building its own; the build happens
    in a temporary folder that is renamed, so an interrupted build never looks finished."""
    path = pretrained_demo_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a", encoding="utf-8") as lock:
        _lock(lock)
        remove_dead_builds()
        if not is_cached():
            building = path.with_name(f"{path.name}.building-{os.getpid()}")
            shutil.rmtree(building, ignore_errors=True)
            build_demo_model(building, seed=PRETRAIN_SEED, pretrain_steps=PRETRAIN["steps"],
                             **PRETRAIN_SHAPE)
            try:
                building.rename(path)
            except OSError:  # only without the lock: another build finished first
                shutil.rmtree(building, ignore_errors=True)
    return path


def _lock(file) -> None:
    """Block until this process holds an exclusive lock on the open file (released when it is
    closed or the process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; two builds at once each build, the first rename wins
        return
    fcntl.flock(file, fcntl.LOCK_EX)


def remove_dead_builds() -> list[Path]:
    """Delete the cache's `demo-model-*.building-PID` folders whose process is gone (a killed
    build); return them."""
    import psutil

    removed = []
    for folder in cache_root().glob("demo-model-*.building-*"):
        pid = folder.name.rsplit("-", 1)[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def write_demo_model(out_dir: str | Path) -> Path:
    """Copy the pre-trained demo model (pre-trained first if neither the package nor the cache
    has the current recipe's) to out_dir."""
    out = Path(out_dir)
    shutil.copytree(pretrained_demo_model(), out, dirs_exist_ok=True)
    return out


def write_shipped(out_dir: Path = SHIPPED_DEMO) -> Path:
    """Pre-train the demo from the recipe and write it, with recipe.json, as the package's files
    (`python -m trainers.tools.demo`, after changing the recipe; commit the result)."""
    import torch
    import transformers

    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    build_demo_model(out, seed=PRETRAIN_SEED, pretrain_steps=PRETRAIN["steps"], **PRETRAIN_SHAPE)
    made_with = {"torch": torch.__version__, "transformers": transformers.__version__,
                 "python": sys.version.split()[0], "threads": torch.get_num_threads()}
    (out / "recipe.json").write_text(json.dumps({"recipe": recipe(), "made_with": made_with},
                                                indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    print(f"pre-training the demo model ({PRETRAIN_TIME}) ...", flush=True)
    print(f"written to {write_shipped()}")
