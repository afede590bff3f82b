"""The unsloth provider: its real path end to end on the CPU, and each documented rule."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import worker_runs
from worker_runs import needs_unsloth

from trainers.config import build_config, check_config
from trainers.diagnostics import diagnose_exception
from trainers.errors import UnsupportedModelError, UnsupportedPlatformError
from trainers.train.providers import unsloth as unsloth_provider


def train(data_dir, config: dict, extra_env: dict | None = None, timeout: float = 900) -> list:
    """Run one job through the real worker process; return its events."""
    return worker_runs.train(data_dir, config, extra_env, timeout)[1]


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory, tiny_config) -> dict[str, list]:
    """The events of the slow tier's three small Unsloth runs, started at once (each imports
    Unsloth while the others wait): the flash-attention switch, a T5 model, a migrated config."""
    home = tmp_path_factory.mktemp("unsloth-small")
    t5 = home / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "is_encoder_decoder": True}))
    hf = tiny_config(max_seq_length=-1, max_steps=2)
    done = worker_runs.train_side_by_side({
        "flash_attention": (home / "flash", tiny_config(provider="unsloth", max_steps=2),
                            {"UNSLOTH_DISABLE_FLASH_ATTN": "1"}),
        "t5": (home / "t5-home", tiny_config(provider="unsloth", model_name=str(t5))),
        # the huggingface config with only provider and a fixed max_seq_length changed
        "migrated": (home / "migrated", {**hf, "provider": "unsloth", "max_seq_length": 128}),
    })
    return {name: events for name, (_, events) in done.items()}


@pytest.fixture(scope="module")
def unsloth_run(tmp_path_factory, demo_model):
    from trainers.tools.demo import SAMPLE_SFT

    home = tmp_path_factory.mktemp("unsloth")
    config = {"provider": "unsloth", "model_name": str(demo_model), "max_seq_length": 128,
              "dataset": str(SAMPLE_SFT), "max_steps": 20, "learning_rate": 5e-3,
              "per_device_train_batch_size": 4, "lora_r": 8, "lora_alpha": 16,
              "lora_dropout": 0.0, "gradient_checkpointing": True}
    return home, train(home, config)


@needs_unsloth
@pytest.mark.unsloth
def test_unsloth_trains_and_proves_it_ran(unsloth_run):
    _, events = unsloth_run
    assert events[-1]["type"] == "finished", events[-1]
    started = events[0]
    evidence = started["unsloth"]
    assert started["provider"] == "unsloth" and evidence["active"] is True
    assert evidence["unsloth_version"] == started["versions"]["unsloth"] == version("unsloth")
    assert evidence["model_family"] == "llama"
    # No GPU here: the record says Unsloth's CPU backend ran, and what that means.
    assert evidence["backend"] == "cpu" and evidence["chunked_cross_entropy"] is True
    assert any("CPU backend" in w for w in started["warnings"])
    assert "trl_lm_head" not in started  # Unsloth's own LM-head dispatch, not ours
    assert started["gradient_checkpointing"] == "unsloth"


@needs_unsloth
@pytest.mark.unsloth
def test_unsloth_loss_falls_and_adapter_is_saved(unsloth_run):
    _, events = unsloth_run
    losses = [e["loss"] for e in events if e["type"] == "progress" and e["loss"] is not None]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1, losses
    adapter = Path(events[-1]["adapter_dir"])
    assert (adapter / "adapter_model.safetensors").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8


@pytest.mark.slow  # fast guard: test_unsloth_loss_falls_and_adapter_is_saved
@needs_unsloth
@pytest.mark.unsloth
def test_saved_adapter_reloads_and_generates(unsloth_run):
    _, events = unsloth_run
    adapter = events[-1]["adapter_dir"]
    script = (
        "import unsloth, torch\n"
        "from unsloth import FastLanguageModel\n"
        f"model, tok = FastLanguageModel.from_pretrained({adapter!r}, max_seq_length=128,"
        " dtype=torch.float32, load_in_4bit=False)\n"
        "FastLanguageModel.for_inference(model)\n"
        "ids = tok('Question: what is', return_tensors='pt')\n"
        "out = model.generate(**ids, max_new_tokens=8, do_sample=False)\n"
        "new = out[0][ids['input_ids'].shape[1]:]\n"
        "print('GENERATED', len(new), repr(tok.decode(new)))\n"
        "print('PEFT', type(model).__name__)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GENERATED 8" in result.stdout and "PEFT PeftModel" in result.stdout


@pytest.mark.slow  # fast guard: test_unsloth_trains_and_proves_it_ran
@needs_unsloth
@pytest.mark.unsloth
def test_flash_attention_switch_is_recorded(small_runs):
    events = small_runs["flash_attention"]
    started = events[0]
    assert started["flash_attention_disabled"] is True
    assert started["attention"] == "disabled by UNSLOTH_DISABLE_FLASH_ATTN=1"
    assert events[-1]["type"] == "finished"


def test_not_installed_fails_with_the_documented_message(tmp_path, tiny_config):
    """A worker in which `import unsloth` fails (a shadowing package that raises ImportError)."""
    shadow = tmp_path / "shadow" / "unsloth"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'unsloth'\")\n")
    events = train(tmp_path / "home", tiny_config(provider="unsloth"),
                   extra_env={"PYTHONPATH": str(shadow.parent)})
    failed = events[-1]
    assert failed["type"] == "failed" and failed["error_type"] == "unsloth_missing"
    assert failed["message"] == ("Unsloth is not installed. Install it with `pip install unsloth` "
                                 "(or this project's unsloth extra), or use provider huggingface")


@pytest.mark.parametrize("system,expected", [("Windows", "Windows (native)"),
                                              ("Darwin", "macOS")])
def test_platform_detection_and_refusal(monkeypatch, system, expected):
    from trainers.tools import doctor

    monkeypatch.setattr(doctor.platform, "system", lambda: system)
    assert doctor.detect_platform() == expected
    with pytest.raises(UnsupportedPlatformError) as info:
        unsloth_provider.check_platform(expected)
    if system == "Windows":
        assert info.value.message == ("Unsloth is not supported on native Windows: "
                                      "use WSL 2 or Docker")
    else:
        assert "macOS" in info.value.message


def test_wsl2_docker_and_linux_are_allowed_wsl1_is_not(monkeypatch):
    from trainers.tools import doctor

    monkeypatch.setattr(doctor.platform, "system", lambda: "Linux")
    monkeypatch.setattr(doctor.platform, "release",
                        lambda: "5.15.153.1-microsoft-standard-WSL2")
    assert doctor.detect_platform() == "WSL 2"
    for where in ("Linux", "WSL 2", "Docker"):
        unsloth_provider.check_platform(where)  # no error
    with pytest.raises(UnsupportedPlatformError, match="WSL 2"):
        unsloth_provider.check_platform("WSL 1")


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2",
                                        "gemma3", "phi", "phi3"])
def test_supported_families(model_type):
    assert unsloth_provider.check_model_family(model_type, False) is None


@pytest.mark.parametrize("model_type", ["t5", "bart"])
def test_encoder_decoders_are_refused(model_type):
    with pytest.raises(UnsupportedModelError,
                       match="not supported by the unsloth provider: use provider huggingface"):
        unsloth_provider.check_model_family(model_type, True)


def test_gemma2_is_refused_on_a_gpu_where_unsloth_failed_to_compile_it():
    with pytest.raises(UnsupportedModelError, match="Gemma 2 layers fail in torch.compile") as exc:
        unsloth_provider.check_known_failure("gemma2", cpu_backend=False)
    assert "provider to huggingface" in exc.value.hint
    unsloth_provider.check_known_failure("gemma2", cpu_backend=True)  # the CPU backend compiles none
    unsloth_provider.check_known_failure("llama", cpu_backend=False)


def test_other_architectures_run_the_generic_path_with_a_warning():
    warning = unsloth_provider.check_model_family("gpt2", False)
    assert "generic path" in warning and "fails if Unsloth does not patch" in warning


@pytest.mark.slow  # fast guard: test_encoder_decoders_are_refused
@needs_unsloth
@pytest.mark.unsloth
def test_t5_model_fails_before_loading(small_runs):
    events = small_runs["t5"]
    assert [e["type"] for e in events] == ["failed"]
    assert events[0]["error_type"] == "unsupported_model"
    assert "use provider huggingface" in events[0]["message"]


def test_inferred_length_is_refused_for_unsloth():
    problems = check_config({"provider": "unsloth", "model_name": "m", "dataset": "d",
                             "max_seq_length": -1})
    assert problems == [{"field": "max_seq_length", "message": (
        "max_seq_length cannot be -1 with the unsloth provider: set a fixed value such as 2048")}]


def test_out_of_memory_diagnosis_lists_the_remedies_in_order():
    import torch

    cfg = build_config({"provider": "unsloth", "model_name": "m", "dataset": "d",
                        "max_seq_length": 2048, "per_device_train_batch_size": 8})
    exc = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    diagnosis = diagnose_exception(exc, cfg)
    assert diagnosis["error_type"] == "oom"
    remedies = diagnosis["remedies"]
    assert remedies[0].startswith("reduce max_seq_length (2048 -> 1024)")
    assert remedies[1].startswith("reduce per_device_train_batch_size (8 -> 4)")
    assert remedies[2] == "enable gradient_checkpointing"
    assert remedies[3] == "enable use_4bit (QLoRA)"


@pytest.mark.slow  # fast guard: test_config.py's migration test
@needs_unsloth
@pytest.mark.unsloth
def test_migrated_config_runs(small_runs):
    """The huggingface config with only provider and a fixed max_seq_length changed."""
    events = small_runs["migrated"]
    assert events[-1]["type"] == "finished" and events[0]["unsloth"]["active"] is True


@pytest.mark.slow  # fast guard: test_unsloth_trains_and_proves_it_ran
@needs_unsloth
@pytest.mark.unsloth
def test_a_model_unsloth_did_not_patch_is_not_taken_for_unsloth(demo_model):
    """The guard behind "never plain Hugging Face under the unsloth label": a model loaded by
    plain transformers, in a process where unsloth is imported, shows no evidence."""
    script = (
        "import unsloth, json, sys\n"
        "from transformers import AutoModelForCausalLM\n"
        "from unsloth import FastLanguageModel\n"
        "from trainers.train.providers.unsloth import patch_evidence\n"
        f"plain = AutoModelForCausalLM.from_pretrained({str(demo_model)!r})\n"
        f"fast, _ = FastLanguageModel.from_pretrained({str(demo_model)!r}, max_seq_length=64,"
        " load_in_4bit=False)\n"
        "print('RESULT', json.dumps([patch_evidence(plain)['active'],"
        " patch_evidence(fast)['active']]))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RESULT [false, true]" in result.stdout
