"""GGUF export, for real: a run on the demo model merged and converted by
`python -m trainers.tools.export RUN_DIR --gguf TYPE` (and by `modelforge export`), loaded by
llama.cpp (llama-cpp-python), by transformers (`gguf_file=`) and read by gguf's own reader. The
greedy continuation of a prompt, from the same prompt token ids (llama.cpp's tokenizer gives
the same ids), compared with the merged model's: identical for f16 in llama.cpp and in
transformers; for q8_0, along the merged model's 24 steps (teacher-forced), the next token
agrees at 21 in llama.cpp (the test asks at least 18) and at 22 in transformers (at least 20).
Also through the REST API, and a family the converter does not know is refused before
anything loads. Every family: test_gguf_families.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from live_server import wait_status

MODELFORGE = str(Path(sys.executable).parent / "modelforge")
PROMPT = "<|user|>\nGive three tips for staying healthy.</s>\n<|assistant|>\n"
NEW_TOKENS = 24
LLAMA_CPP_CONTEXT = 256
LLAMA_CPP_Q8_0_AGREEMENT = 18  # of NEW_TOKENS; measured 21: see the module docstring


def export(run_dir: Path, *args: str) -> tuple[int, list[dict]]:
    done = subprocess.run([sys.executable, "-m", "trainers.tools.export", str(run_dir), *args],
                          capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, lines


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A short run on the demo model with a larger init scale: its next-token choices are
    clear, as a trained model's are (the plain random-init demo's are near ties, which any
    rounding flips). The pre-trained demo would do too, at minutes of pre-training."""
    from trainers.config import build_config
    from trainers.runs.process import launch
    from trainers.runs.registry import RunRegistry
    from trainers.tools.demo import SAMPLE_SFT, build_demo_model

    base = build_demo_model(tmp_path_factory.mktemp("peaked"), initializer_range=0.5)
    registry = RunRegistry(tmp_path_factory.mktemp("gguf"))
    record = registry.create(build_config({
        "model_name": str(base), "dataset": str(SAMPLE_SFT), "max_seq_length": 128,
        "max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 5e-3,
        "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0}), source="test")
    launch(Path(record["run_dir"])).wait(timeout=600)
    assert registry.finish_from_events(record["id"], 0)["status"] == "succeeded"
    return Path(record["run_dir"])


@pytest.fixture(scope="module")
def gguf_file(trained_run):
    """The trained run exported to a GGUF type (once per type in this module): its path."""
    paths: dict[str, Path] = {}

    def get(gguf_type: str) -> Path:
        if gguf_type not in paths:
            code, lines = export(trained_run, "--gguf", gguf_type)
            assert code == 0, lines
            paths[gguf_type] = Path(lines[-1]["gguf"])
        return paths[gguf_type]
    return get


def exported(run_dir: Path, gguf_file, gguf_type: str):
    """(merged model, the GGUF loaded by transformers, the GGUF's path), in float32."""
    import torch
    from transformers import AutoModelForCausalLM

    path = gguf_file(gguf_type)
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged", dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                  dtype=torch.float32)
    return merged, loaded, path


def greedy(model, tokenizer):
    """The prompt and the model's greedy continuation of it (NEW_TOKENS tokens)."""
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    return ids.shape[1], model.generate(ids, max_new_tokens=NEW_TOKENS,
                                        min_new_tokens=NEW_TOKENS, do_sample=False)


def next_token_choices(model, start: int, sequence) -> list[int]:
    """The model's greedy choice at each step of `sequence` after `start` (teacher-forced:
    every step sees the same text, so one different choice does not change the rest)."""
    import torch

    with torch.no_grad():
        return model(sequence).logits[0, start - 1:-1].argmax(-1).tolist()


@pytest.mark.slow
def test_f16_gguf_holds_the_merged_weights_and_continues_identically(trained_run, gguf_file):
    import torch
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    merged, loaded, path = exported(trained_run, gguf_file, "f16")
    state = loaded.state_dict()
    for name, tensor in merged.state_dict().items():
        assert torch.equal(tensor, state[name]), name  # the merge was float16: no rounding
    tokenizer = AutoTokenizer.from_pretrained(trained_run / "merged")
    (_, want), (_, got) = greedy(merged, tokenizer), greedy(loaded, tokenizer)
    assert got.tolist() == want.tolist()

    reader = GGUFReader(path)
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert field("general.architecture") == "llama"
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    assert field("tokenizer.ggml.tokens") == [token for token, _ in vocab]
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    modelfile = (path.parent / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{path.name}\n")
    assert "<|user|>\n{{ .Prompt }}</s>\n<|assistant|>\n" in modelfile
    assert 'PARAMETER stop "</s>"' in modelfile


@pytest.mark.slow
def test_q8_0_gguf_is_within_its_rounding_and_continues_alike(trained_run, gguf_file):
    from transformers import AutoTokenizer

    merged, loaded, path = exported(trained_run, gguf_file, "q8_0")
    state = loaded.state_dict()
    for name, tensor in merged.state_dict().items():
        # q8_0: 32 weights share a scale, their largest magnitude / 127 (stored in 16 bits);
        # rounding moves each by half a step and the scale's rounding a little more (rows of
        # 176 are not whole blocks: kept 16-bit, exact)
        assert (tensor - state[name]).abs().max() <= tensor.abs().max() / 127 * 0.6, name
    tokenizer = AutoTokenizer.from_pretrained(trained_run / "merged")
    start, sequence = greedy(merged, tokenizer)
    want = next_token_choices(merged, start, sequence)
    assert want == sequence[0, start:].tolist()
    got = next_token_choices(loaded, start, sequence)
    agreement = sum(a == b for a, b in zip(want, got))
    print(f"q8_0 picks the merged model's next token at {agreement} of {NEW_TOKENS} steps")
    assert agreement >= 20, (agreement, want, got)  # measured: see the module docstring


def llama_cpp(path: Path):
    """The GGUF loaded by llama.cpp (llama-cpp-python), logits kept for every position; and
    the seconds the load took."""
    import time

    from llama_cpp import Llama

    start = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=LLAMA_CPP_CONTEXT, n_threads=2, seed=0,
                logits_all=True, verbose=False)
    return llm, time.perf_counter() - start


def llama_cpp_greedy(llm, ids: list[int], new_tokens: int) -> list[int]:
    """llama.cpp's greedy continuation of the token ids: the largest logit at each step, fed
    back (no sampler, so nothing but the model decides)."""
    import numpy as np

    llm.reset()
    llm.eval(ids)
    chosen = []
    for _ in range(new_tokens):
        chosen.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(chosen[-1:])
    return chosen


def llama_cpp_choices(llm, start: int, sequence: list[int]) -> list[int]:
    """llama.cpp's choice at each step of `sequence` after `start`, teacher-forced as
    next_token_choices does it in transformers."""
    llm.reset()
    llm.eval(sequence)
    return llm.scores[start - 1:len(sequence) - 1].argmax(-1).tolist()


@pytest.mark.slow  # fast guard: test_llama_cpp_reads_the_export_as_transformers_does[llama]
@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_llama_cpp_continues_the_prompt_as_the_merged_model(trained_run, gguf_file, gguf_type):
    """The same prompt token ids into the merged model (transformers) and into llama.cpp; the
    greedy continuations compared on token ids. llama.cpp's own tokenizer gives the same ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_file(gguf_type)  # the export writes the merged model beside the GGUF
    tokenizer = AutoTokenizer.from_pretrained(trained_run / "merged")
    merged = AutoModelForCausalLM.from_pretrained(trained_run / "merged", dtype=torch.float32)
    start, sequence = greedy(merged, tokenizer)
    prompt, want = sequence[0, :start].tolist(), sequence[0, start:].tolist()
    llm, seconds = llama_cpp(path)
    try:
        assert llm.tokenize(PROMPT.encode(), add_bos=True, special=True) == prompt
        got = llama_cpp_greedy(llm, prompt, NEW_TOKENS)
        choices = llama_cpp_choices(llm, start, sequence[0].tolist())
    finally:
        llm.close()
    agreement = sum(a == b for a, b in zip(want, choices))
    print(f"llama.cpp {gguf_type}: loaded in {seconds:.2f} s; free-running greedy "
          f"{'identical' if got == want else f'differs from step {_first_difference(got, want)}'}; "
          f"next token agrees at {agreement} of {NEW_TOKENS} teacher-forced steps")
    if gguf_type == "f16":
        assert got == want
    else:
        assert agreement >= LLAMA_CPP_Q8_0_AGREEMENT, (agreement, want, choices)


def _first_difference(a: list[int], b: list[int]) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)


def test_a_family_the_converter_does_not_know_is_refused_before_the_merge(tmp_path):
    base = tmp_path / "phi"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "phi",
                                                  "architectures": ["PhiForCausalLM"]}))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model_name": str(base)}))
    code, lines = export(run_dir, "--gguf", "q8_0")
    assert code == 1 and lines[-1]["error_type"] == "export"
    assert lines[-1]["message"] == (
        "GGUF export does not know the phi family (PhiForCausalLM): Phi-2's LayerNorm with "
        "biases and partial rotary embedding (llama.cpp's PHI2) are not converted here, and "
        "transformers' GGUF loader does not read it.")
    assert lines[-1]["hint"] == (
        "It exports llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3 models; for this "
        "one, export the merged model (16-bit, without --gguf) and convert it with llama.cpp's "
        "convert_hf_to_gguf.py.")
    assert not (run_dir / "merged").exists()
    code, lines = export(run_dir, "--gguf", "q3_k")
    assert code == 1 and "Use one of f16, bf16, q8_0" in lines[-1]["hint"]


@pytest.mark.slow
def test_export_to_gguf_over_http(client, tiny_config):
    run_id = client.post("/api/start_training", json=tiny_config(max_steps=2)).json()["run_id"]
    assert client.get(f"/api/runs/{run_id}/gguf/q8_0").status_code in (404, 409)
    assert wait_status(client, run_id)["status"] == "succeeded"
    bad = client.post(f"/api/runs/{run_id}/export", json={"gguf": "q3_k"})
    assert bad.status_code == 422 and bad.json()["problems"][0]["field"] == "gguf"
    response = client.post(f"/api/runs/{run_id}/export", json={"gguf": "q8_0"}, timeout=600)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["gguf"].endswith("-q8_0.gguf") and "FROM ./" in body["modelfile"]
    download = client.get(body["download"])
    assert download.status_code == 200 and download.content[:4] == b"GGUF"
    assert len(download.content) == body["gguf_bytes"]


# --- `modelforge export` --------------------------------------------------------------------

def modelforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MODELFORGE, *args], capture_output=True, text=True, timeout=600)


def test_modelforge_export_refuses_bad_arguments_before_any_work(tmp_path):
    from trainers.config import build_config
    from trainers.runs.registry import RunRegistry
    from trainers.tools.demo import SAMPLE_SFT

    registry = RunRegistry(tmp_path)
    queued = registry.create(build_config({"model_name": "org/model", "dataset": str(SAMPLE_SFT)}),
                             source="test")
    bad_type = modelforge("export", queued["id"], "--data-dir", str(tmp_path), "--gguf", "q3_k")
    assert bad_type.returncode == 2
    assert "argument --gguf: Unknown GGUF type 'q3_k'. Use one of f16, bf16, q8_0" in \
        bad_type.stderr and "llama-quantize" in bad_type.stderr
    unknown = modelforge("export", "no-such-run", "--data-dir", str(tmp_path))
    assert unknown.returncode == 2
    assert unknown.stderr.startswith(f"error: RUN: no run with id 'no-such-run' in {tmp_path}")
    assert "Fix: Give a run id from the Runs tab or GET /api/runs" in unknown.stderr
    not_a_run = modelforge("export", str(tmp_path))
    assert not_a_run.returncode == 2 and "is not a run's folder" in not_a_run.stderr
    no_adapter = modelforge("export", queued["run_dir"])
    assert no_adapter.returncode == 2
    assert f"Run {Path(queued['run_dir']).name} has no saved adapter." in no_adapter.stderr
    no_data_dir = modelforge("export", "x", "--data-dir", str(tmp_path / "missing"))
    assert no_data_dir.returncode == 2 and "--data-dir:" in no_data_dir.stderr
    running = modelforge("export", queued["id"], "--data-dir", str(tmp_path), "--gguf", "q8_0")
    assert running.returncode == 2
    assert f"Run {queued['id']} is queued: it has no final adapter yet." in running.stderr
    assert not (Path(queued["run_dir"]) / "merged").exists()


@pytest.mark.slow  # fast guard: test_modelforge_export_refuses_bad_arguments_before_any_work
def test_modelforge_export_writes_the_merged_model_and_the_gguf(trained_run):
    from gguf import GGUFReader

    done = modelforge("export", trained_run.name, "--data-dir", str(trained_run.parents[1]),
                      "--gguf", "q4_0", "--dtype", "float16")
    assert done.returncode == 0, done.stderr
    path = trained_run / "gguf" / "q4_0" / f"{trained_run.name}-q4_0.gguf"
    assert f"merged model: {trained_run / 'merged'}\nGGUF: {path}\n" in done.stdout
    assert f"Ollama: cd {path.parent} && ollama create NAME -f Modelfile" in done.stdout
    assert "merge: merging the adapter" in done.stdout and "pre-tokenizer gpt-2" in done.stdout
    assert GGUFReader(path).fields["general.file_type"].contents() == 2  # MOSTLY_Q4_0
    assert (path.parent / "Modelfile").read_text().startswith(f"FROM ./{path.name}\n")
