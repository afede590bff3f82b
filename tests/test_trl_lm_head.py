"""TRL 1.15's fused LM head: the PyTorch stand-in on a machine without a GPU, and the eager
kernel under torch.compile (inductor cannot compile TRL's Triton kernel on torch 2.11)."""

import pytest
import torch
import trl.trainer.utils as trl_utils

from trainers.train.trl_cpu import keep_lm_head_out_of_compile, use_torch_lm_head_without_gpu


def _inputs():
    torch.manual_seed(0)
    return torch.randn(6, 8), torch.randn(11, 8), torch.randint(0, 11, (6,))


def _log_probs(hidden, weight, targets):
    return trl_utils._ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 4)[0]


def _restore_kernel_after_the_test(monkeypatch):
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", trl_utils._ChunkedLogProbFunction)


def test_stand_in_matches_log_softmax(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the stand-in is only installed on machines without a GPU")
    _restore_kernel_after_the_test(monkeypatch)
    assert use_torch_lm_head_without_gpu()
    hidden, weight, targets = _inputs()
    expected = torch.log_softmax(hidden @ weight.T, -1).gather(-1, targets[:, None])[:, 0]
    assert torch.allclose(_log_probs(hidden, weight, targets), expected, atol=1e-6)


@pytest.mark.slow  # fast guard: test_stand_in_matches_log_softmax, every SFT run
def test_compile_breaks_the_graph_at_the_kernel_and_keeps_its_result(monkeypatch):
    _restore_kernel_after_the_test(monkeypatch)
    use_torch_lm_head_without_gpu()  # on this CPU, the kernel is the PyTorch stand-in
    hidden, weight, targets = _inputs()
    expected = _log_probs(hidden, weight, targets)

    def loss(hidden):
        return -_log_probs(torch.tanh(hidden), weight, targets).sum()

    assert torch._dynamo.explain(loss)(hidden).graph_break_count == 0  # traced whole before
    assert keep_lm_head_out_of_compile()
    assert not keep_lm_head_out_of_compile()  # wrapped once
    torch._dynamo.reset()
    assert torch._dynamo.explain(loss)(hidden).graph_break_count >= 1
    assert torch.allclose(_log_probs(hidden, weight, targets), expected)
    assert torch.allclose(torch.compile(loss)(hidden), loss(hidden))
