"""The VRAM estimate (trainers/estimate.py): against every peak measured on the H200 and
committed, how it responds to each setting, its verdicts, and over real HTTP."""

import importlib.util
import json
from pathlib import Path

import pytest

from trainers.config import build_config
from trainers.estimate import estimate, estimate_shape, model_config, shape_of
from trainers.tools.demo import SAMPLE_SFT

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"provider": "huggingface", "strategy": "sft", "four_bit": False, "batch": 8,
            "seq": 2048, "checkpointing": True, "dtype_bytes": 2, "lora_r": 16,
            "targets": "auto", "optimizer": "adamw_torch_fused"}


def _check_script():
    spec = importlib.util.spec_from_file_location(
        "vram_estimate_check", ROOT / "benchmarks" / "vram_estimate_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_estimate_is_within_15_percent_of_every_committed_gpu_peak():
    check = _check_script()
    rows = [check.compare(p) for p in check.measured_points()]
    assert len(rows) >= 10 and {r["model"] for r in rows} >= {"llama-3.2-1b", "llama-3.2-3b",
                                                              "llama-3.1-8b"}
    assert {(r["settings"]["provider"], r["settings"]["four_bit"]) for r in rows} == {
        ("huggingface", False), ("huggingface", True), ("unsloth", False), ("unsloth", True)}
    hugging_face_free = {(s["liger"], s["attention"], s["checkpointing"]) for s in
                         (r["settings"] for r in rows if r["padding_free"])
                         if s["provider"] == "huggingface"}
    assert hugging_face_free >= {(True, "sdpa", False), (False, "sdpa", False),
                                 (True, "sdpa_per_row", False), (False, "sdpa_per_row", False),
                                 (True, "sdpa", True)}  # each kind of padding-free run measured
    worst = max(rows, key=lambda r: abs(r["error"]))
    assert abs(worst["error"]) <= check.TOLERANCE, worst


def _estimate(**changes) -> dict:
    return estimate_shape(shape_of(model_config("llama-3.2-1b")), **{**SETTINGS, **changes})


def test_each_setting_moves_the_part_it_should():
    base = _estimate()
    parts = base["components_gib"]
    assert base["lora_parameters"] == 11_272_192  # what PEFT reports for r 16 on every linear
    assert _estimate(checkpointing=False)["peak_allocated_gib"] > 2 * base["peak_allocated_gib"]
    doubled = _estimate(batch=16)["components_gib"]
    assert doubled["saved_activations"] == pytest.approx(2 * parts["saved_activations"], rel=1e-3)
    assert doubled["weights"] == parts["weights"]
    assert _estimate(four_bit=True, provider="unsloth")["components_gib"]["weights"] < \
        parts["weights"] / 2
    assert _estimate(provider="unsloth")["components_gib"]["saved_activations"] == 0  # on CPU
    assert _estimate(optimizer="adamw_8bit")["components_gib"]["adapter_and_optimizer"] < \
        parts["adapter_and_optimizer"]
    assert _estimate(strategy="dpo")["components_gib"]["logits"] > 0 == parts["logits"]


def _config(**values):
    return build_config({"model_name": "llama-3.1-8b", "dataset": str(SAMPLE_SFT),
                         "max_seq_length": 2048, "per_device_train_batch_size": 8,
                         "bf16": True, "gradient_checkpointing": False, **values})


def test_a_config_that_does_not_fit_gets_the_settings_to_change():
    verdict = estimate(_config(), gpu_gib=80)
    assert verdict["fits"] is False and verdict["verdict"].startswith("predicted not to fit")
    assert any(f.startswith("gradient_checkpointing: true") for f in verdict["fixes"])
    batch = next(f for f in verdict["fixes"] if f.startswith("per_device_train_batch_size"))
    smaller = int(batch.split(":")[1].split()[0])
    assert 1 <= smaller < 8
    assert estimate(_config(per_device_train_batch_size=smaller), gpu_gib=80)["fits"] is True
    # measured on an H200 (issue 14): 131.7 GiB allocated, nearly out of memory
    assert estimate(_config(), gpu_gib=140)["verdict"].startswith("tight")
    assert estimate(_config(provider="unsloth"), gpu_gib=140)["fits"] is True  # measured 76.1
    assert estimate(_config(), gpu_gib=None)["fits"] is None


def test_a_known_largest_batch_is_estimated_instead_of_the_worst_case():
    """Padding-free rows that are known (a benchmark's) hold fewer tokens than batch x
    max_seq_length: asked for them, the estimate is that of a batch of that many tokens."""
    worst = estimate(_config(padding_free=True), gpu_gib=140)
    known = estimate(_config(padding_free=True), gpu_gib=140, batch_tokens=2 * 2048)
    two_rows = estimate(_config(per_device_train_batch_size=2), gpu_gib=140)
    # the same activations; SDPA's mask spans the packed 4,096 tokens, not two rows of 2,048
    masks = [r["components_gib"].pop("attention_mask") for r in (known, two_rows)]
    assert masks[0] == pytest.approx(2 * masks[1], rel=1e-3)
    per_row = estimate(_config(padding_free=True, attention="sdpa_per_row"), gpu_gib=140,
                       batch_tokens=2 * 2048)
    assert per_row["components_gib"]["attention_mask"] == 0  # no mask at all
    assert known["components_gib"] == two_rows["components_gib"]
    assert known["peak_allocated_gib"] == pytest.approx(
        two_rows["peak_allocated_gib"] + masks[0] - masks[1], abs=0.011)
    assert known["tokens_per_batch"] == 2 * 2048 < worst["tokens_per_batch"]
    assert known["fits"] is True and worst["fits"] is False


def test_what_cannot_be_estimated_says_why(tmp_path):
    missing = estimate(_config(model_name=str(tmp_path)))
    assert missing["available"] is False and "config.json" in missing["reason"]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768}))
    other = estimate(_config(model_name=str(tmp_path)))
    assert not other["available"] and "'gpt2'" in other["reason"]
    (tmp_path / "config.json").write_text("{not json")
    assert "not readable JSON" in estimate(_config(model_name=str(tmp_path)))["reason"]
    (tmp_path / "config.json").write_text(json.dumps(
        {"hidden_size": "x", "intermediate_size": 1, "num_hidden_layers": 1,
         "num_attention_heads": 1, "vocab_size": 1}))
    assert "whole number" in estimate(_config(model_name=str(tmp_path)))["reason"]
    unfixed = estimate(_config(max_seq_length=-1, provider="huggingface"))
    assert not unfixed["available"] and "max_seq_length" in unfixed["reason"]
    # measured at 2.8x its estimate on a GPU: no number rather than a wrong one
    grpo = estimate(_config(provider="unsloth", strategy="rlhf"))
    assert not grpo["available"] and "13.9 GiB" in grpo["reason"]
    assert estimate(_config(provider="huggingface", strategy="rlhf"))["available"]


@pytest.mark.slow
def test_the_estimate_over_http(server, tiny_config):
    with server.client() as client:
        ok = client.post("/api/config/estimate?gpu_gib=24", json=tiny_config())
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["available"] and body["fits"] is True and body["gpu_gib"] == 24
        assert body["peak_allocated_gib"] > 0 and set(body["components_gib"]) >= {
            "weights", "adapter_and_optimizer", "saved_activations"}
        bad = client.post("/api/config/estimate", json=tiny_config(lora_r=0))
        assert bad.status_code == 422 and bad.json()["problems"][0]["field"] == "lora_r"
        refused = client.post("/api/config/estimate", json=tiny_config(model_name="/etc"))
        assert refused.status_code in (400, 403, 422) and "model_name" in refused.text
        assert client.post("/api/config/estimate?gpu_gib=-1", json=tiny_config()).status_code \
            == 422
        text = client.post("/api/config/estimate", content=b"x",
                           headers={"content-type": "text/plain"})
        assert text.status_code == 415
        speedy = client.post("/api/config/estimate?gpu_gib=24", json=tiny_config(speed_mode=True))
        assert speedy.status_code == 200, speedy.text
        assert any(d.startswith("padding-free batches: on") for d in speedy.json()["speed_mode"])
        assert client.get("/api/health").json()["torch_in_server"] is False


def test_the_training_tab_paragraph_warns_with_the_fix():
    from modelforge_ui.estimate_view import estimate_markdown

    text = estimate_markdown(_config(), gpu_gib=80)
    assert text.startswith("**⚠ GPU memory estimate:** peak about 128.2 GiB allocated")
    assert "predicted not to fit" in text and "gradient_checkpointing: true" in text
    assert "⚠" not in estimate_markdown(_config(gradient_checkpointing=True), gpu_gib=80)
    assert "not available" in estimate_markdown(_config(model_name="/nowhere"))
    speedy = estimate_markdown(_config(speed_mode=True), gpu_gib=80)  # speed mode picks the batch
    assert speedy.startswith("**GPU memory estimate with speed mode's settings:** peak about ")
    assert "fits: about" in speedy


def test_a_padding_free_run_that_does_not_fit_is_offered_per_row_attention():
    """SDPA's mask over a packed micro-batch grows with the square of its tokens (4 bytes a
    query x key pair per layer, measured on the 8B shape): per-row attention has none."""
    verdict = estimate(_config(padding_free=True), gpu_gib=80)
    assert verdict["fits"] is False
    assert verdict["components_gib"]["attention_mask"] > 30  # 16,384 tokens x 32 layers
    fix = next(f for f in verdict["fixes"] if f.startswith("attention: sdpa_per_row"))
    assert "no mask" in fix
