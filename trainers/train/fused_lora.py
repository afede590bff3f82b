"""A leaner forward for PEFT's LoRA linear layers (the config's `fused_lora`, on in speed mode).

PEFT computes `base(x) + lora_B(lora_A(cast(x))) * scaling`. With a bf16 model its adapter is
float32, so `cast` copies the activation to float32 and autocast copies it back for the bf16
matmul; the `* scaling` and the `+` are two more passes over the projection's output. Each of
them runs forward and backward for every LoRA layer and micro-batch. This forward keeps the
input in the model's dtype under autocast and adds the LoRA branch inside the up-projection's
GEMM (`addmm(base(x), lora_A(x), B^T, alpha=scaling)`): the same sum, rounded once.

Only the plain case is taken: one active adapter, unmerged, no DoRA-style variant, no extra
arguments. Anything else, and a half-precision input without autocast, goes to PEFT's own
forward, so the layer never computes something PEFT would not.
"""

from __future__ import annotations

import types


def fused_forward(self, x, *args, **kwargs):
    import torch

    names = self.active_adapters
    name = names[0] if len(names) == 1 else None
    plain = (name is not None and not args and not kwargs and not self.disable_adapters
             and not self.merged and name in self.lora_A and name not in self.lora_variant)
    lora_a = self.lora_A[name] if plain else None
    if not plain or (x.dtype != lora_a.weight.dtype
                     and not torch.is_autocast_enabled(x.device.type)):
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    down = lora_a(self.lora_dropout[name](x))
    out = torch.addmm(result.reshape(-1, result.shape[-1]), down.reshape(-1, down.shape[-1]),
                      self.lora_B[name].weight.t(), alpha=self.scaling[name])
    return out.reshape(result.shape)  # autocast's dtype, or the model's: result's


def fuse_lora_layers(model) -> int:
    """Give each PEFT LoRA linear layer of model the fused forward; returns how many."""
    from peft.tuners.lora import Linear

    layers = [m for m in model.modules() if isinstance(m, Linear)]
    for layer in layers:
        layer.forward = types.MethodType(fused_forward, layer)
    return len(layers)

