"""Classifiers for the exporter: the paper's three torchvision architectures adapted to
small inputs, a small fast CNN, and the :class:`Normalize` wrapper that puts the input
normalisation inside the model (and so inside the exported ONNX graph).

Contract every model here keeps (the release writer relies on it):

* input: raw pixels, ``uint8 [N, C, H, W]`` (``Normalize`` casts and normalises);
* output: ``float32 [N, D]`` logits produced *directly* by one plain ``nn.Linear`` (the
  head; no op after it), ``D`` given by the caller: ``3p`` for the ``paper`` profile,
  ``K + T`` slots for ``secure``, ``K`` for a plain model. :func:`head_of` finds it,
  :func:`replace_head` swaps it (``encryip-export protect``).

Architectures (``build_model(arch, ...)``):

``resnet18``
    torchvision ResNet18 with its 7×7 stride-2 stem and max-pool kept; only ``conv1``
    takes ``in_channels``. 28×28 → 7×7 after the stem → 1×1 before the adaptive pool.
``googlenet``
    torchvision GoogLeNet, ``aux_logits=False, init_weights=True,
    transform_input=False``; only ``conv1.conv`` takes ``in_channels``. 28×28 runs as is
    (the ceil-mode pools end at 1×1).
``alexnet``
    torchvision AlexNet with the first conv changed from 11×11 stride 4 to 5×5 stride 1
    (padding 2), so 28×28 gives 28 → 13 → 6 → 2 through the three max-pools; the
    adaptive average pool (6×6) and the classifier are torchvision's.
``cnn``
    two 3×3 conv blocks (16, 32 channels, max-pool) and a 128-unit hidden layer:
    about 1.2 M multiply-adds per 28×28 image, ~99% on MNIST in 2 epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "ARCHS",
    "MNIST_MEAN",
    "MNIST_STD",
    "Normalize",
    "SmallCNN",
    "build_model",
    "head_of",
    "replace_head",
]

ARCHS = ("cnn", "resnet18", "googlenet", "alexnet")
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


class Normalize(nn.Module):
    """``uint8 [N, C, H, W]`` pixels → ``(x / 255 − mean) / std`` → ``net``.

    Folded into one multiply-add: ``x * (1 / (255 std)) − mean / std``.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean/std must have equal length and std > 0: {mean}, {std}")
        self.net = net
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * s))
        self.register_buffer("shift", -m / s)

    scale: torch.Tensor
    shift: torch.Tensor

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(torch.float32) * self.scale + self.shift
        return self.net(x)


class SmallCNN(nn.Module):
    """Fast classifier for tests and the demo (see the module docstring)."""

    def __init__(self, in_channels: int, num_outputs: int, image_size: int = 28, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.hidden = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * side * side, 128), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(128, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(self.features(x)))


def _resnet18(in_channels: int, num_outputs: int) -> nn.Module:
    from torchvision.models import resnet18

    m = resnet18(weights=None, num_classes=num_outputs)
    m.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(m.conv1.weight, mode="fan_out", nonlinearity="relu")
    return m


def _googlenet(in_channels: int, num_outputs: int) -> nn.Module:
    from torchvision.models import googlenet

    m = googlenet(
        weights=None,
        num_classes=num_outputs,
        aux_logits=False,
        init_weights=True,
        transform_input=False,
    )
    conv = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.trunc_normal_(conv.weight, mean=0.0, std=0.01, a=-2, b=2)  # torchvision's init
    m.conv1.conv = conv
    return m


def _alexnet(in_channels: int, num_outputs: int) -> nn.Module:
    from torchvision.models import alexnet

    m = alexnet(weights=None, num_classes=num_outputs)
    m.features[0] = nn.Conv2d(in_channels, 64, kernel_size=5, stride=1, padding=2)
    return m


def build_model(
    arch: str,
    in_channels: int,
    num_outputs: int,
    image_size: int = 28,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Normalize:
    """A fresh ``arch`` classifier wrapped in :class:`Normalize` (uint8 pixels in,
    ``num_outputs`` logits out). ``mean``/``std`` default to MNIST's, repeated per channel."""
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    if num_outputs < 2:
        raise ValueError(f"num_outputs must be >= 2, got {num_outputs}")
    if arch == "cnn":
        if image_size < 4:
            raise ValueError(f"cnn needs image_size >= 4, got {image_size}")
        net: nn.Module = SmallCNN(in_channels, num_outputs, image_size)
    elif arch == "resnet18":
        net = _resnet18(in_channels, num_outputs)
    elif arch == "googlenet":
        net = _googlenet(in_channels, num_outputs)
    elif arch == "alexnet":
        net = _alexnet(in_channels, num_outputs)
    else:
        raise ValueError(f"unknown arch {arch!r}: expected one of {', '.join(ARCHS)}")
    mean = tuple(mean) if mean is not None else MNIST_MEAN * in_channels
    std = tuple(std) if std is not None else MNIST_STD * in_channels
    return Normalize(net, mean, std)


def _head_path(model: nn.Module) -> str:
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head")
    return linears[-1]


def head_of(model: nn.Module) -> nn.Linear:
    """The final ``nn.Linear`` (the last one registered; by the contract, the last op)."""
    head = model.get_submodule(_head_path(model))
    assert isinstance(head, nn.Linear)
    return head


def replace_head(model: nn.Module, num_outputs: int) -> nn.Linear:
    """Swap the head for a fresh ``nn.Linear(in_features, num_outputs)``; returns it."""
    path = _head_path(model)
    old = model.get_submodule(path)
    assert isinstance(old, nn.Linear)
    new = nn.Linear(old.in_features, num_outputs, bias=True)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)
    return new
