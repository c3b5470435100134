"""One look inside a model: an eval-mode, no-grad forward of a random image with forward hooks on named layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from amc.device import model_device

Hook = Callable[[str, nn.Module, tuple, torch.Tensor], None]


def forward_with_hooks(model: nn.Module, input_shape: Sequence[int], hook: Hook, kinds: tuple[type, ...]) -> None:
    """Call `hook(name, module, inputs, output)` for every module of the given kinds as one random image
    (batch 1) passes; the hooks are removed and the model's training mode restored afterwards."""
    handles = [
        m.register_forward_hook(lambda mod, inputs, output, name=name: hook(name, mod, inputs, output))
        for name, m in model.named_modules()
        if isinstance(m, kinds)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.randn(1, *input_shape, device=model_device(model)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
