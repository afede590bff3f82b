"""`attention: sdpa_per_row`: each packed row attends to itself alone, for padding-free batches.

With padding_free, TRL concatenates a micro-batch's rows into one sequence whose position ids
restart at 0 for each row. Under "sdpa", transformers keeps the rows apart with a dense
block-diagonal mask over the whole concatenation, and SDPA computes every masked-out block:
attention costs the square of the micro-batch's tokens, not the sum of its rows' squares
(benchmarks/results/best_llama-3.1-8b_lora16_huggingface_b8/). Here each row is its own causal
SDPA call without a mask tensor, so on a GPU SDPA can pick its flash kernel, and the mask
function registered beside it builds no mask at all.

On an Ampere or newer NVIDIA GPU with torch's variable-length flash attention
(`torch.nn.attention.varlen`, torch 2.10+) and bf16/fp16 inputs, all rows of a micro-batch go
through one varlen call per layer instead: the same causal attention per row, without a Python
loop of SDPA calls whose slices' gradients are each a zero-filled copy of the whole query, key
and value (measured in docs/benchmarking.md). Elsewhere (older GPUs, the CPU, float32) the rows
run one SDPA call each. The worker's log says which ran.

Registered under ATTENTION with transformers' AttentionInterface and AttentionMaskInterface;
load the model with attn_implementation=ATTENTION after register().
"""

from __future__ import annotations

import functools
import inspect

ATTENTION = "sdpa_per_row"

# The position ids the row bounds were last read from, and those bounds: every layer of one
# forward gets the same tensor, so the host waits for the device once per forward, not per layer.
_last: dict = {"ids": None, "version": None, "bounds": None}
# the varlen call's cumulative row lengths for the last bounds, on the device
_last_cu: dict = {"bounds": None, "device": None, "cu_seq": None, "longest": 0}
_announced: set = set()


def register() -> None:
    """Make ATTENTION a valid attn_implementation (idempotent)."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(ATTENTION, per_row_attention)
    AttentionMaskInterface.register(ATTENTION, no_mask)


def no_mask(batch_size: int, q_length: int, kv_length: int, attention_mask=None, **kwargs):
    """No mask tensor: the rows are found from the position ids instead. A padding mask with
    zeros would be dropped silently, so it is refused."""
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError(
            f"attention {ATTENTION} got a padded batch (an attention mask with zeros); it "
            "needs padding-free batches (padding_free: true) or rows without padding. Set "
            "attention to sdpa for padded batches.")
    return None


def row_bounds(position_ids, items: int, cu_seq_lens=None) -> list[list[tuple[int, int]]]:
    """(start, end) of each row, for each of the batch's `items`: from cu_seq_lens (one item)
    when the collator gives them, else a position id of 0 starts a row."""
    if cu_seq_lens is not None:
        ends = cu_seq_lens.tolist()
        return [list(zip(ends, ends[1:]))]
    if position_ids is None:
        raise ValueError(f"attention {ATTENTION} needs position_ids (or cu_seq_lens_q) to find "
                         "the rows of a packed batch")
    if position_ids is _last["ids"] and position_ids._version == _last["version"]:
        return _last["bounds"]
    length = position_ids.shape[1]
    starts: list[set[int]] = [{0} for _ in range(items)]
    # the ids may be one row for the whole batch (unsqueezed, not expanded)
    for item, start in (position_ids.expand(items, -1) == 0).nonzero().tolist():
        starts[item].add(start)
    bounds = []
    for item_starts in starts:
        ordered = sorted(item_starts)
        bounds.append(list(zip(ordered, ordered[1:] + [length])))
    _last.update(ids=position_ids, version=position_ids._version, bounds=bounds)
    return bounds


def per_row_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                      scaling: float | None = None, position_ids=None, **kwargs):
    """transformers' SDPA attention (GQA, causality, scaling as it does them) on each row
    alone. query/key/value: (batch, heads, tokens, head_dim); returns (batch, tokens, heads,
    head_dim) as sdpa_attention_forward does."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if key.shape[2] != query.shape[2]:
        # generation with a cache: the mask function refused padding, so plain SDPA is exact
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    bounds = row_bounds(position_ids, query.shape[0], kwargs.pop("cu_seq_lens_q", None))
    if len(bounds) != query.shape[0]:
        raise ValueError(f"attention {ATTENTION}: cu_seq_lens describe one packed row of rows, "
                         f"and the batch has {query.shape[0]}")
    # transformers passes the window as an argument (Mistral, Qwen2) or keeps it on the layer
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    if window and any(end - start > window for rows in bounds for start, end in rows):
        # a row within the window is exact without it; a longer one would need the window
        raise ValueError(f"attention {ATTENTION} does not implement sliding-window attention "
                         f"(a row is longer than the window of {window} tokens): set attention "
                         "to sdpa for this model, or max_seq_length to the window or less")
    varlen = _varlen_kernel()
    if (varlen is not None and query.is_cuda and not dropout
            and query.dtype in (torch.bfloat16, torch.float16) and _flash_capable(query.device)):
        _announce("one torch varlen flash-attention call per layer for all rows")
        return _one_varlen_call(varlen, query, key, value, bounds, scaling), None
    _announce("one SDPA call per row")
    items = []
    for item, rows in enumerate(bounds):
        parts = [sdpa_attention_forward(
            module, query[item:item + 1, :, start:end], key[item:item + 1, :, start:end],
            value[item:item + 1, :, start:end], None, dropout=dropout, scaling=scaling,
            **kwargs)[0] for start, end in rows]
        items.append(torch.cat(parts, dim=1))
    return torch.cat(items, dim=0), None


def _varlen_kernel():
    """torch's varlen_attn, or None where this torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@functools.cache
def _flash_capable(device) -> bool:
    """torch's flash kernels need an Ampere or newer GPU (a T4 or V100 keeps the loop, where
    SDPA picks a kernel it has)."""
    import torch

    return torch.version.hip is None and torch.cuda.get_device_capability(device) >= (8, 0)


def _announce(kernel: str) -> None:
    """Say once per process which kernel ran, in the run's log."""
    if kernel not in _announced:
        _announced.add(kernel)
        print(f"attention {ATTENTION}: {kernel}", flush=True)


def cumulative_lengths(bounds, length: int) -> tuple[list[int], int]:
    """The rows of every batch item laid end to end (item i's tokens start at i * length):
    their cumulative ends from 0, as varlen attention takes them, and the longest row."""
    ends, longest = [0], 0
    for item, rows in enumerate(bounds):
        for start, end in rows:
            if item * length + start != ends[-1]:
                raise ValueError(f"attention {ATTENTION}: rows must cover the batch without gaps")
            ends.append(item * length + end)
            longest = max(longest, end - start)
        if ends[-1] != (item + 1) * length:
            raise ValueError(f"attention {ATTENTION}: rows must cover the batch without gaps")
    return ends, longest


@functools.cache
def _takes_enable_gqa(varlen) -> bool:
    """torch 2.11's flash kernel takes fewer key/value heads as they are; later versions ask
    for grouped-query attention by name."""
    return "enable_gqa" in inspect.signature(varlen).parameters


def _one_varlen_call(varlen, query, key, value, bounds, scaling):
    """All rows in one causal varlen flash-attention call; returns (batch, tokens, heads,
    head_dim) as the per-row loop does."""
    import torch

    items, heads, length, head_dim = query.shape
    if _last_cu["bounds"] is not bounds or _last_cu["device"] != query.device:
        ends, longest = cumulative_lengths(bounds, length)
        _last_cu.update(bounds=bounds, device=query.device, longest=longest,
                        cu_seq=torch.tensor(ends, dtype=torch.int32, device=query.device))
    cu_seq, longest = _last_cu["cu_seq"], _last_cu["longest"]

    def tokens_first(t):  # (batch, heads, tokens, dim) -> (batch * tokens, heads, dim)
        return t.transpose(1, 2).reshape(items * length, t.shape[1], head_dim)

    gqa = {"enable_gqa": True} if key.shape[1] != heads and _takes_enable_gqa(varlen) else {}
    out = varlen(tokens_first(query), tokens_first(key), tokens_first(value), cu_seq, cu_seq,
                 longest, longest, scale=scaling, window_size=(-1, 0), **gqa)
    return out.reshape(items, length, heads, head_dim)
