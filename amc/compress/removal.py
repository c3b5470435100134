"""Block removal: a residual block becomes its shortcut, a shape-preserving layer becomes identity."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

Layer = (nn.Conv2d, nn.Linear)


def removable_blocks(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Outermost children of `nn.Sequential` containers that hold a conv/linear layer and keep their
    input's shape.

    For a post-ReLU residual block `relu(x + f(x))` with an identity shortcut, the shortcut alone is `x`
    (already non-negative), so replacing the block by `nn.Identity` is exact block removal.
    """
    candidates = {}
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        for child_name, child in parent.named_children():
            if any(isinstance(m, Layer) for m in child.modules()):
                candidates[f"{parent_name}.{child_name}" if parent_name else child_name] = child
    shapes: dict[str, bool] = {}
    hooks = [
        module.register_forward_hook(
            lambda m, inputs, output, n=name: shapes.__setitem__(
                n, isinstance(output, torch.Tensor) and tuple(inputs[0].shape) == tuple(output.shape)
            )
        )
        for name, module in candidates.items()
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.randn(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    outermost = [n for n in candidates if not any(n.startswith(other + ".") for other in candidates)]
    return [name for name in outermost if shapes.get(name)]


def remove_blocks(model: nn.Module, names: Sequence[str]) -> None:
    """Replace each named block by `nn.Identity`, in place."""
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, nn.Identity())
