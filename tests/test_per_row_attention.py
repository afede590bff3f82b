"""attention: sdpa_per_row: SDPA once per packed row gives transformers' own masked-SDPA result
on padding-free batches, keeps the rows apart, trains the same first-step loss through the
worker, is refused where it cannot apply, and the benchmark's plain script uses it too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainers.config import build_config
from trainers.errors import ConfigError
from trainers.train import attention
from trainers.tools.demo import SAMPLE_SFT

from test_check_plain import WITHOUT_TRAINERS
from test_padding_free import losses
from worker_runs import train_side_by_side

ROWS = (5, 3, 4)  # a packed batch: three rows, position ids restarting at 0 for each


def packed_position_ids(lengths=ROWS) -> torch.Tensor:
    return torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)


def tiny_llama(heads: int = 4, kv_heads: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    attention.register()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=heads,
                         num_key_value_heads=kv_heads)
    return LlamaForCausalLM(config).eval()


def logits(model, implementation: str, input_ids, position_ids) -> torch.Tensor:
    model.config._attn_implementation = implementation  # how transformers switches a model
    with torch.no_grad():  # use_cache off: a cache would stop transformers detecting the packing
        return model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_per_row_attention_equals_masked_sdpa(kv_heads):
    """The attention function alone, against transformers' SDPA with its own packed-sequence
    mask (masking_utils), and the whole model's logits on the packed batch."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import create_causal_mask

    model = tiny_llama(kv_heads=kv_heads)
    module = model.model.layers[0].self_attn
    positions = packed_position_ids()
    tokens = positions.shape[1]
    torch.manual_seed(1)
    query = torch.randn(1, 4, tokens, 8)
    key, value = torch.randn(2, 1, kv_heads, tokens, 8)
    model.config._attn_implementation = "sdpa"
    mask = create_causal_mask(model.config, torch.zeros(1, tokens, 32), None, None, positions)
    assert mask is not None and not mask[0, 0, 5, 4]  # row 2 may not see row 1
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
    got, _ = attention.per_row_attention(module, query, key, value, None, scaling=0.3,
                                         position_ids=positions)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)

    input_ids = torch.randint(0, 97, (1, tokens))
    torch.testing.assert_close(logits(model, attention.ATTENTION, input_ids, positions),
                               logits(model, "sdpa", input_ids, positions),
                               rtol=1e-5, atol=1e-5)


def test_rows_do_not_attend_to_each_other():
    model = tiny_llama()
    positions = packed_position_ids()
    input_ids = torch.randint(0, 97, (1, positions.shape[1]))
    changed = input_ids.clone()
    changed[0, :ROWS[0]] = (changed[0, :ROWS[0]] + 1) % 97  # only the first row's tokens
    before = logits(model, attention.ATTENTION, input_ids, positions)
    after = logits(model, attention.ATTENTION, changed, positions)
    assert not torch.allclose(before[0, :ROWS[0]], after[0, :ROWS[0]])
    torch.testing.assert_close(before[0, ROWS[0]:], after[0, ROWS[0]:], rtol=0, atol=0)


def test_a_padded_batch_is_refused_and_an_unpadded_one_is_plain_causal():
    model = tiny_llama()
    model.config._attn_implementation = attention.ATTENTION
    input_ids = torch.randint(0, 97, (2, 6))
    with pytest.raises(ValueError, match="padded batch.*padding_free"):
        model(input_ids=input_ids, attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2]),
              use_cache=False)
    ones = torch.ones(2, 6, dtype=torch.long)
    with torch.no_grad():
        per_row = model(input_ids=input_ids, attention_mask=ones, use_cache=False).logits
        model.config._attn_implementation = "sdpa"
        sdpa = model(input_ids=input_ids, attention_mask=ones, use_cache=False).logits
    torch.testing.assert_close(per_row, sdpa, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_worker_trains_the_same_first_step_loss(tmp_path, demo_model):
    base = {"model_name": str(demo_model), "dataset": str(SAMPLE_SFT), "max_seq_length": 256,
            "max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3,
            "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "seed": 3,
            "completion_only_loss": False, "padding_free": True}
    per_row_config = {**base, "attention": "sdpa_per_row"}
    done = train_side_by_side({"sdpa": (tmp_path / "sdpa", base),
                               "per_row": (tmp_path / "per-row", per_row_config)})
    sdpa, per_row = done["sdpa"][1], done["per_row"][1]
    assert per_row[-1]["type"] == "finished", per_row[-1]
    started = next(e for e in per_row if e["type"] == "started")
    assert "sdpa_per_row" in json.dumps(started)  # the provider's info names the attention
    a, b = losses(sdpa), losses(per_row)
    assert len(a) == len(b) == 2
    assert b[0] == pytest.approx(a[0], rel=1e-4)


@pytest.mark.parametrize("config, fix", [
    ({"provider": "unsloth", "max_seq_length": 128, "padding_free": True},
     "huggingface provider"),
    ({}, "set padding_free to true"),
    ({"strategy": "dpo", "speed_mode": True}, "set padding_free to true"),
])
def test_config_errors_name_the_field_and_the_fix(config, fix):
    with pytest.raises(ConfigError) as caught:
        build_config({"model_name": "m", "dataset": "d", "attention": "sdpa_per_row", **config})
    problems = [p for p in caught.value.problems if p["field"] == "attention"]
    assert problems and fix in problems[0]["message"], caught.value.problems


def test_speed_mode_and_padding_free_allow_it():
    ok = {"model_name": "m", "dataset": "d", "attention": "sdpa_per_row"}
    assert build_config({**ok, "padding_free": True}).attention == "sdpa_per_row"
    assert build_config({**ok, "speed_mode": True}).attention == "sdpa_per_row"
    assert build_config({"model_name": "m", "dataset": "d"}).attention == "sdpa"


def test_the_benchmark_spec_takes_it_for_padding_free_runs_only():
    from trainers.benchmark.spec import build_spec
    from trainers.benchmark.variant import train_config

    spec = build_spec({"model": "m", "attention": "sdpa_per_row", "padding": "padding_free"})
    assert train_config(spec, "m", "huggingface", "lora16").attention == "sdpa_per_row"
    assert train_config(spec, "m", "unsloth", "lora16").attention == "sdpa"  # its own
    with pytest.raises(ConfigError, match="set padding to padding_free or best"):
        build_spec({"model": "m", "attention": "sdpa_per_row"})  # padded by default


def _plain_run(tmp_path: Path, settings: dict, name: str) -> dict:
    from trainers.benchmark.runner import PLAIN_SCRIPT

    path, out = tmp_path / f"settings-{name}.json", tmp_path / f"{name}.json"
    path.write_text(json.dumps(settings))
    done = subprocess.run([sys.executable, "-c", WITHOUT_TRAINERS, str(PLAIN_SCRIPT), str(path),
                           "huggingface", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_the_plain_script_runs_per_row_attention_without_modelforge(tmp_path, demo_model):
    from trainers.benchmark.runner import plain_settings
    from trainers.benchmark.spec import build_spec

    spec = build_spec({"model": str(demo_model), "padding": "padding_free", "modes": ["lora16"],
                       "attention": "sdpa_per_row", "max_seq_length": 64, "batch_size": 3,
                       "steps": 1, "warmup_steps": 0, "lora_r": 4, "lora_alpha": 8,
                       "optimizer": "adamw_torch"})
    torch.manual_seed(0)
    rows = [{"input_ids": torch.randint(3, 500, (n,)).tolist(), "completion_mask": [1] * n}
            for n in (17, 9, 30)]
    (tmp_path / "prepared.json").write_text(json.dumps({"rows": rows}))
    prepared = {"model_dir": str(demo_model), "tokenizer_dir": str(demo_model)}
    settings = plain_settings(spec, prepared, tmp_path, "lora16")
    assert settings["attention"] == "sdpa_per_row"  # the runner hands the spec's attention on
    sdpa = _plain_run(tmp_path, {**settings, "attention": "sdpa"}, "sdpa")
    per_row = _plain_run(tmp_path, settings, "per-row")
    assert per_row["trainers_modules"] == [] and per_row["status"] == "ok"
    assert per_row["effective"]["attention"] == "sdpa_per_row"
    assert sdpa["effective"]["attention"] == "sdpa"
    assert per_row["loss"]["first_step"] == pytest.approx(sdpa["loss"]["first_step"], rel=1e-4)


def test_gradients_equal_masked_sdpa_with_gradient_checkpointing():
    """Training needs the backward pass too; checkpointing recomputes the forward with the same
    position ids, so the row bounds read once per forward must still hold."""
    model = tiny_llama().train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    positions = packed_position_ids()
    input_ids = torch.randint(0, 97, (1, positions.shape[1]))
    grads = {}
    for implementation in ("sdpa", attention.ATTENTION):
        model.zero_grad()
        model.config._attn_implementation = implementation
        model(input_ids=input_ids, position_ids=positions, labels=input_ids,
              use_cache=False).loss.backward()
        grads[implementation] = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    torch.testing.assert_close(grads[attention.ATTENTION], grads["sdpa"], rtol=1e-4, atol=1e-6)


def tiny_mistral(window: int):
    from transformers import MistralConfig, MistralForCausalLM

    attention.register()
    torch.manual_seed(0)
    return MistralForCausalLM(MistralConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=window)).eval()


def test_a_sliding_window_counts_only_where_a_row_is_longer_than_it():
    """Rows within the window are what SDPA with the window gives; a longer row is refused
    (per-row attention does not implement the window) rather than trained without it."""
    positions = packed_position_ids()  # rows of 5, 3 and 4 tokens
    input_ids = torch.randint(0, 97, (1, positions.shape[1]))
    wide = tiny_mistral(window=max(ROWS))
    torch.testing.assert_close(logits(wide, attention.ATTENTION, input_ids, positions),
                               logits(wide, "sdpa", input_ids, positions),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="longer than the window of 4 tokens.*max_seq_length"):
        logits(tiny_mistral(window=4), attention.ATTENTION, input_ids, positions)


def reference_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None,
                     window_size=(-1, -1), enable_gqa=False):
    """torch's varlen_attn contract in plain SDPA, for the CPU, where its flash kernel does not
    run: (tokens, heads, dim) rows cut at cu_seq, causal for window_size (-1, 0)."""
    import torch.nn.functional as F

    assert window_size == (-1, 0) and cu_seq_q is cu_seq_k
    ends = cu_seq_q.tolist()
    assert max_q == max(b - a for a, b in zip(ends, ends[1:]))
    rows = [F.scaled_dot_product_attention(
        query[a:b].transpose(0, 1), key[a:b].transpose(0, 1), value[a:b].transpose(0, 1),
        is_causal=True, scale=scale, enable_gqa=True).transpose(0, 1)
        for a, b in zip(ends, ends[1:])]
    return torch.cat(rows)


@pytest.mark.parametrize("items", [1, 2])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_one_varlen_call_lays_out_rows_as_the_loop_does(items, kv_heads):
    """The GPU path's layout: every batch item's rows end to end for one varlen call (the
    engine's and the plain script's), the result back in the loop's shape and values. The
    flash kernel itself runs only on a GPU; the GPU results compare its losses with the loop's."""
    from trainers.benchmark import plain_script

    module = tiny_llama(kv_heads=kv_heads).model.layers[0].self_attn
    positions = packed_position_ids().expand(items, -1)
    tokens = positions.shape[1]
    torch.manual_seed(1)
    query = torch.randn(items, 4, tokens, 8)
    key, value = torch.randn(2, items, kv_heads, tokens, 8)
    expected, _ = attention.per_row_attention(module, query, key, value, None, scaling=0.3,
                                              position_ids=positions)
    bounds = attention.row_bounds(positions, items)
    assert attention.cumulative_lengths(bounds, tokens) == (
        [0, 5, 8, 12, 17, 20, 24][:1 + 3 * items], 5)
    got = attention._one_varlen_call(reference_varlen, query, key, value, bounds, 0.3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    starts = plain_script.row_starts(positions, items)
    got = plain_script.one_varlen_call(reference_varlen, query, key, value, starts, 0.3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_rows_with_a_gap_are_refused_by_the_varlen_layout():
    with pytest.raises(ValueError, match="without gaps"):
        attention.cumulative_lengths([[(0, 5), (5, 10)]], 12)
