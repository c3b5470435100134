"""The model registry: `create_model(name, num_classes=...)` builds any registered architecture.

Names:
- CIFAR ResNets `resnet8/20/32/44/56/110` (He et al. 2016; ResNet-8 for quick tests) and `plain20`
  (no shortcuts, AMC's CIFAR model);
- `vgg16_cifar`; `digits_cnn`, a small CNN for 8x8 digits;
- `vit_tiny`, a 1.8 M-parameter ViT for 32x32 images (patch 4: 64 tokens; amc/vision_transformer.py);
- `tv:<name>`, any torchvision classification model (`small_input=True` adapts the stem to 32x32,
  `in_channels` replaces the first conv for other than RGB inputs);
- `timm:<name>`, any timm model, untrained (the `timm` extra), told the image size where it takes one;
- `path/to/file.py:ClassName`, a user's own module, called as `ClassName(num_classes=..., in_channels=...)`
  (`in_channels` only if its `__init__` takes it).

In torchvision, timm and user models, each self-attention `nn.MultiheadAttention` is replaced by amc's equivalent
`SelfAttention` (amc/attention.py), and torchvision's Swin attention by `WindowAttention` (amc/window_attention.py),
whose heads can be pruned.

`input_kwargs` says what a model is told about its inputs.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from amc.attention import replace_multihead_attention
from amc.errors import AmcError, library_text
from amc.vision_transformer import VisionTransformer
from amc.window_attention import replace_window_attention

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Registered names, plus two torchvision examples of the `tv:` prefix."""
    return sorted(_REGISTRY) + ["tv:mobilenet_v2", "tv:resnet18"]


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a fresh, randomly initialised model by registry name, `tv:<name>`, `timm:<name>` or `file.py:Class`."""
    if name in _REGISTRY:
        return _REGISTRY[name](num_classes=num_classes, **kwargs)
    if name.startswith("tv:"):
        return _with_prunable_attention(_torchvision_model(name[3:], num_classes, **kwargs))
    if name.startswith("timm:"):
        return _with_prunable_attention(_timm_model(name[5:], num_classes, **kwargs))
    if ".py:" in name:
        return _with_prunable_attention(_user_model(name, num_classes, **kwargs))
    raise AmcError(f"unknown model {name!r}; choose one of {', '.join(list_models())} or path/to/file.py:ClassName")


SMALL_INPUT_PIXELS = 64
"""torchvision models get `small_input=True` (a stride-1 stem, no max-pool) for images this size or smaller."""


def _with_prunable_attention(model: nn.Module) -> nn.Module:
    """Each standard self-attention `nn.MultiheadAttention` becomes amc's equivalent `SelfAttention`, and each
    torchvision `ShiftedWindowAttention` amc's `WindowAttention`, whose heads can be pruned."""
    replace_multihead_attention(model)
    replace_window_attention(model)
    return model


def input_kwargs(name: str, input_shape) -> dict:
    """What `create_model` is told about the inputs: their channels, and for a torchvision model whether
    they are small (see `SMALL_INPUT_PIXELS`)."""
    kwargs = {"in_channels": int(input_shape[0])}
    if name.startswith("tv:"):
        kwargs["small_input"] = min(input_shape[1:]) <= SMALL_INPUT_PIXELS
    if name in IMAGE_SIZED or name.startswith("timm:"):
        kwargs["image_size"] = int(input_shape[1])
    return kwargs


def model_spec(name: str, num_classes: int, **kwargs) -> dict:
    """Architecture as plain data, stored in checkpoints and replayed through `create_model`."""
    return {"name": name, "num_classes": num_classes, "kwargs": kwargs}


def create_from_spec(spec: dict) -> nn.Module:
    """The architecture a checkpoint names. A user's `file.py:Class` is built only if that file is trusted
    (`trust_model_code`): building it runs the file, and a checkpoint may come from anyone."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or "num_classes" not in spec:
        raise AmcError("the checkpoint's arch entry is missing or malformed; re-create it with `amc train-teacher`")
    name = spec["name"]
    if ".py:" in name:
        file_name = name.rpartition(":")[0]
        if not is_trusted(file_name):
            raise AmcError(f"the checkpoint's architecture is {name}, and building it runs {file_name}; if you "
                           f"wrote or trust that file, pass --trust-model-code {file_name}")  # fmt: skip
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise AmcError("the checkpoint's arch kwargs are not a mapping of names; re-create it with `amc train-teacher`")
    try:
        return create_model(name, num_classes=spec["num_classes"], **kwargs)
    except AmcError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:  # fields a damaged file holds
        raise AmcError(
            f"the checkpoint's arch entry cannot build {name} ({library_text(exc)}); "
            "re-create it with `amc train-teacher`"
        ) from None


TRUST_ENV = "AMC_TRUST_MODEL_CODE"
"""Model files the user trusts, separated by os.pathsep; set by `--trust-model-code` and by naming a file as
`--model`, and inherited by worker processes."""


def trust_named_model(name: str) -> None:
    """A model the user names on the command line (`--model file.py:Class`) is theirs to run."""
    if ".py:" in name:
        trust_model_code(name.rpartition(":")[0])


def trust_model_code(file_name: str | Path) -> None:
    trusted = [p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p]
    os.environ[TRUST_ENV] = os.pathsep.join([*trusted, str(Path(file_name).resolve())])


def is_trusted(file_name: str | Path) -> bool:
    trusted = {p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p}
    return str(Path(file_name).resolve()) in trusted


# ----------------------------------------------------------------------------- CIFAR ResNets


class BasicBlock(nn.Module):
    """Two 3x3 convs; with `shortcut=True` the input is added back (1x1 projection when shapes change)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.has_shortcut = shortcut
        self.downsample: nn.Module | None = None
        if shortcut and (stride != 1 or in_planes != planes):
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.has_shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16/32/64 channels in three stages of n blocks."""

    def __init__(self, depth: int, num_classes: int = 10, shortcut: bool = True, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise AmcError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, in_planes = [], 16
        for planes, stride in [(16, 1), (32, 2), (64, 2)]:
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


for _depth in (8, 20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}")(lambda num_classes=10, _d=_depth, **kw: CifarResNet(_d, num_classes, **kw))


@register_model("plain20")
def plain20(num_classes: int = 10, **kwargs) -> nn.Module:
    return CifarResNet(20, num_classes, shortcut=False, **kwargs)


# ----------------------------------------------------------------------------- VGG and small CNNs

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class CifarVGG(nn.Module):
    """VGG-16 with BatchNorm for 32x32 inputs and a single linear classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [
                    nn.Conv2d(in_channels, v, 3, padding=1, bias=False),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                in_channels = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model("vgg16_cifar")
def vgg16_cifar(num_classes: int = 10, **kwargs) -> nn.Module:
    return CifarVGG(num_classes, **kwargs)


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 grayscale digits: three conv-BN-ReLU layers and a classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()

        def conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(in_channels, width), *conv(width, width), *conv(width, 2 * width, 2), *conv(2 * width, 2 * width)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("digits_cnn")
def digits_cnn(num_classes: int = 10, **kwargs) -> nn.Module:
    return DigitsCNN(num_classes, **kwargs)


@register_model("vit_tiny")
def vit_tiny(num_classes: int = 10, **kwargs) -> nn.Module:
    return VisionTransformer(num_classes, **kwargs)


IMAGE_SIZED = ("vit_tiny",)
"""Registry models told the image size (a ViT's position embedding has one entry per patch)."""


# ----------------------------------------------------------------------------- torchvision and user models


TRAINING_ONLY_HEADS = ("googlenet", "inception_v3")
"""torchvision models built without their auxiliary classifiers, which run only in training mode."""


def _torchvision_model(
    name: str, num_classes: int, small_input: bool = False, in_channels: int = 3, **kwargs
) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise AmcError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()")
    builder = torchvision.models.get_model_builder(name)
    if "aux_logits" in inspect.signature(builder).parameters or name in TRAINING_ONLY_HEADS:
        kwargs.setdefault("aux_logits", False)  # training-only heads: not pruned with the trunk, never deployed
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    if small_input:
        _shrink_stem(model)
    return model


def _timm_model(name: str, num_classes: int, in_channels: int = 3, image_size: int | None = None,
                **kwargs) -> nn.Module:  # fmt: skip
    """An untrained timm model; `image_size` reaches those that take one (ViTs: their position embedding)."""
    try:
        import timm
    except ImportError:
        raise AmcError(f"timm:{name} needs the timm package; install it with pip install -e '.[timm]'") from None
    if name not in timm.list_models():
        raise AmcError(f"unknown timm model {name!r}; see timm.list_models()")
    options = {"pretrained": False, "num_classes": num_classes, "in_chans": in_channels, **kwargs}
    if image_size is not None:
        try:
            return timm.create_model(name, img_size=image_size, **options)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, **options)


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    name, first = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    replacement = nn.Conv2d(in_channels, first.out_channels, first.kernel_size, first.stride, first.padding,
                            bias=first.bias is not None)  # fmt: skip
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, replacement)


def _shrink_stem(model: nn.Module) -> None:
    """Adapt an ImageNet stem to 32x32 inputs: first conv at stride 1 (3x3 for 7x7 stems), no stem max-pool."""
    first_name, first = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if first.kernel_size == (7, 7):
        replacement = nn.Conv2d(first.in_channels, first.out_channels, 3, 1, 1, bias=first.bias is not None)
        parent_name, _, attr = first_name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, replacement)
    else:
        first.stride = (1, 1)
    if isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()


def _user_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    file_name, _, class_name = name.rpartition(":")
    path = Path(file_name)
    if not path.is_file():
        raise AmcError(f"model file {path} does not exist; use path/to/file.py:ClassName")
    spec = importlib.util.spec_from_file_location(f"amc_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if cls is None or not callable(cls):
        raise AmcError(f"{path} has no class {class_name!r}; use path/to/file.py:ClassName")
    parameters = inspect.signature(cls).parameters
    if "num_classes" in parameters:
        kwargs["num_classes"] = num_classes
    channels = kwargs.pop("in_channels", 3)
    if "in_channels" in parameters:
        kwargs["in_channels"] = channels
    elif channels != 3:
        raise AmcError(f"{class_name} in {path} takes no in_channels argument, but the images have {channels} "
                       "channel(s); add `in_channels` to its __init__ (amc passes the data's channels) or load "
                       "the data with --channels 3")  # fmt: skip
    return cls(**kwargs)
