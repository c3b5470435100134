"""AMC-style least-squares reconstruction (He et al. 2017/2018): after channels are removed, refit each
consumer layer's weights so that, on sampled feature-map positions, its output matches the teacher's.

Applies where it fits: ordinary (non-grouped) convs and linear layers whose inputs lost channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from amc.compress.pruning import find_units
from amc.data import DataSplits


def kept_output_channels(teacher: nn.Module, history: list, input_shape: Sequence[int]) -> dict[str, torch.Tensor]:
    """For each conv/linear layer of the teacher, the indices of its output channels the student keeps."""
    units = {u.root: u for u in find_units(teacher, input_shape)}
    kept = {}
    for root, is_out, pruned in history:
        unit = units.get(root)
        if unit is None or not is_out:
            continue
        pruned = set(pruned)
        for layer, index in unit.out_index.items():
            kept[layer] = torch.tensor([c for c, root_channel in index.items() if root_channel not in pruned])
    return kept


def _patches(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, features, positions): the inputs each output position of `layer` sees."""
    if isinstance(layer, nn.Linear):
        return x.reshape(x.shape[0], -1, 1)
    return F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)


def reconstruct(
    student: nn.Module,
    teacher: nn.Module,
    data: DataSplits,
    history: list,
    input_shape: Sequence[int],
    *,
    batches: int = 4,
    batch_size: int = 128,
    positions: int = 10,
    seed: int = 0,
) -> list[str]:
    """Refit, in forward order, every fitting layer whose input channels were pruned; returns their names."""
    kept = kept_output_channels(teacher, history, input_shape)  # traces the graph, so outside no_grad
    with torch.no_grad():
        return _refit(student, teacher, data, kept, batches, batch_size, positions, seed)


def _refit(student, teacher, data, kept, batches, batch_size, positions, seed) -> list[str]:
    student_layers = dict(student.named_modules())
    targets = []
    for name, t_layer in teacher.named_modules():
        s_layer = student_layers.get(name)
        if not isinstance(t_layer, (nn.Conv2d, nn.Linear)) or type(s_layer) is not type(t_layer):
            continue
        if isinstance(t_layer, nn.Conv2d) and t_layer.groups != 1:
            continue
        if s_layer.weight.shape[1] < t_layer.weight.shape[1]:
            targets.append(name)
    was_training = student.training, teacher.training
    student.eval()
    teacher.eval()
    device = next(student.parameters()).device
    for name in targets:
        s_layer, t_layer = student_layers[name], teacher.get_submodule(name)
        generator = torch.Generator().manual_seed(seed)
        inputs, outputs = [], []
        captured = {}
        h_in = s_layer.register_forward_hook(lambda m, i, o, c=captured: c.__setitem__("x", i[0]))
        h_out = t_layer.register_forward_hook(lambda m, i, o, c=captured: c.__setitem__("y", o))
        try:
            for step, (x, _) in enumerate(data.batches("train", batch_size)):
                if step >= batches:
                    break
                x = x.to(device)
                student(x)
                teacher(x)
                patches = _patches(s_layer, captured["x"])  # (N, F, P)
                target = captured["y"].reshape(x.shape[0], captured["y"].shape[1], -1)  # (N, C, P)
                pick = torch.randint(0, patches.shape[2], (x.shape[0], min(positions, patches.shape[2])),
                                     generator=generator).to(device)  # fmt: skip
                inputs.append(torch.gather(patches, 2, pick[:, None, :].expand(-1, patches.shape[1], -1)))
                outputs.append(torch.gather(target, 2, pick[:, None, :].expand(-1, target.shape[1], -1)))
        finally:
            h_in.remove()
            h_out.remove()
        X = torch.cat(inputs).transpose(1, 2).reshape(-1, inputs[0].shape[1]).double()
        Y = torch.cat(outputs).transpose(1, 2).reshape(-1, outputs[0].shape[1]).double()
        if name in kept:
            Y = Y[:, kept[name].to(device)]
        if s_layer.bias is not None:
            Y = Y - s_layer.bias.double()
        # gelsd copes with rank-deficient patches but exists on the CPU only (CUDA has gels alone)
        solution = torch.linalg.lstsq(X.cpu(), Y.cpu(), driver="gelsd").solution  # (features, out)
        s_layer.weight.copy_(solution.T.reshape(s_layer.weight.shape).to(s_layer.weight))
    student.train(was_training[0])
    teacher.train(was_training[1])
    return targets
