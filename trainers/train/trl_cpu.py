"""TRL 1.15's fused LM head on a machine without a GPU, and under torch.compile.

TRL's SFT, DPO and GRPO trainers always compute log-probabilities through a chunked LM-head
kernel written in Triton (`trl.kernels.ChunkedLogProbFunction`). With triton installed (it comes
with the CUDA build of torch that unsloth pulls) but no GPU, every step fails with
`RuntimeError: 0 active drivers ([]). There should only be one.`

On a CPU-only machine we swap in a PyTorch function with the same inputs and outputs. It is
numerically the same computation (it materialises the logits of the scored tokens only, which
is fine at CPU sizes). It is never used when a CUDA device exists, and the worker records in the
`started` event whether it was applied, so nothing changes silently.
"""

from __future__ import annotations

import torch


class TorchChunkedLogProb:
    """Same signature and return tuple as trl.kernels.ChunkedLogProbFunction.apply."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size,
              final_logit_softcapping=None, logit_scale=1.0, outputs=("log_probs",)):
        logits = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
        if final_logit_softcapping is not None:
            logits = final_logit_softcapping * torch.tanh(logits / final_logit_softcapping)
        logits = logits / temperature
        log_probs_all = torch.log_softmax(logits, -1)
        log_probs = log_probs_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs_all.exp() * log_probs_all).sum(-1) if "entropy" in outputs else None
        log_sum_sq = torch.logsumexp(2 * log_probs_all, -1).detach() \
            if "log_sum_sq_probs" in outputs else None
        mean_logits = logits.mean(-1).detach() if "mean_logits" in outputs else None
        is_top1 = (logits.argmax(-1) == targets) if "is_top1" in outputs else None
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1


def use_torch_lm_head_without_gpu() -> bool:
    """Install the PyTorch LM head when no CUDA device exists. Returns True if installed."""
    if torch.cuda.is_available():
        return False
    import trl.trainer.utils as trl_utils

    trl_utils._ChunkedLogProbFunction = TorchChunkedLogProb
    return True


def keep_lm_head_out_of_compile() -> bool:
    """Run TRL's LM-head kernel eagerly inside a torch.compile'd model. Returns True if wrapped.

    TRL computes the loss inside the model's patched forward, so torch.compile traces its
    Triton kernel too, and inductor (torch 2.11) fails on it: "Loop-carried variable m has
    initial type fp32 but is re-assigned to fp64" (H200, 2026-12-02). Disabled for the compiler,
    dynamo breaks the graph at the kernel and still compiles the decoder layers around it.
    """
    import trl.trainer.utils as trl_utils

    kernel = trl_utils._ChunkedLogProbFunction
    if kernel is None or getattr(kernel, "eager_under_compile", False):
        return False

    class EagerChunkedLogProb:
        eager_under_compile = True
        apply = staticmethod(torch.compiler.disable(kernel.apply))

    trl_utils._ChunkedLogProbFunction = EagerChunkedLogProb
    return True
