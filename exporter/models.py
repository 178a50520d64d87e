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

import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

__all__ = [
    "ARCHS",
    "HEAD_CANDIDATES",
    "MNIST_MEAN",
    "MNIST_STD",
    "Normalize",
    "SmallCNN",
    "build_model",
    "clean_state_dict",
    "find_head",
    "head_of",
    "load_factory",
    "load_state",
    "load_weights",
    "replace_head",
    "stem_channels",
    "torchvision_names",
    "wrap",
]

log = logging.getLogger(__name__)

ARCHS = ("cnn", "resnet18", "googlenet", "alexnet")
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


class Normalize(nn.Module):
    """``uint8 [N, C, H, W]`` pixels → ``(x / 255 − mean) / std`` → ``net``.

    Folded into one multiply-add: ``x * (1 / (255 std)) − mean / std``. ``mean`` and
    ``std`` are on torchvision's [0, 1] scale, one per channel the network takes.
    ``repeat`` = 3 turns 1-channel pixels into the 3 channels a network's stem takes
    (the grey channel repeated, inside the graph). ``head`` names the classifier head
    (an attribute path inside ``net``; ``None``: found, see :func:`find_head`).
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        repeat: int = 1,
        head: str | None = None,
    ):
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean/std must have equal length and std > 0: {mean}, {std}")
        self.net = net
        self.repeat = repeat
        self.head = head
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * s))
        self.register_buffer("shift", -m / s)

    scale: torch.Tensor
    shift: torch.Tensor

    @property
    def mean(self) -> tuple[float, ...]:
        m = -self.shift / (255.0 * self.scale)
        return tuple(round(float(v), 6) for v in m.flatten())

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(round(float(v), 6) for v in (1.0 / (255.0 * self.scale)).flatten())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(torch.float32)
        if getattr(self, "repeat", 1) > 1:  # grey data, RGB stem
            x = torch.cat([x] * self.repeat, dim=1)
        return self.net(x * self.scale + self.shift)


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


def torchvision_names() -> list[str]:
    """Every torchvision classification builder (``torchvision.models.list_models``)."""
    import torchvision.models as tvm

    return list(tvm.list_models(module=tvm))


def _torchvision(name: str, num_outputs: int, image_size: int) -> nn.Module:
    """torchvision's ``name`` as torchvision builds it (stem untouched), no weights."""
    import torchvision.models as tvm

    names = torchvision_names()
    if name not in names:
        close = [n for n in names if n.split("_")[0] == name.split("_")[0]] or names[:8]
        raise ValueError(
            f"--arch torchvision:{name}: not a torchvision classification model "
            f"(e.g. {', '.join(close)}; {len(names)} in all)"
        )
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_outputs}
    if name in ("googlenet", "inception_v3"):  # one output, not (logits, aux logits)
        kwargs.update(aux_logits=False, init_weights=True, transform_input=False)
    if name.startswith("vit_"):  # position embeddings are sized by the input
        kwargs["image_size"] = image_size
    net: nn.Module = tvm.get_model(name, **kwargs)
    return net


def load_factory(spec: str) -> Callable[[int], nn.Module]:
    """``package.module:callable`` → the callable (``callable(num_outputs) -> nn.Module``).

    The module is imported as Python would; if that fails, once more with the current
    directory on ``sys.path`` (so ``--model-factory mymodels:build`` works from the
    folder holding ``mymodels.py``).
    """
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"--model-factory {spec!r}: expected 'package.module:callable'")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError:
        cwd = os.getcwd()
        if cwd in sys.path:
            raise ValueError(f"--model-factory {spec!r}: cannot import {mod_name!r}") from None
        sys.path.insert(0, cwd)
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            raise ValueError(f"--model-factory {spec!r}: cannot import {mod_name!r}: {e}") from e
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--model-factory {spec!r}: {mod_name} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"--model-factory {spec!r}: {attr!r} is not callable")
    return cast(Callable[[int], nn.Module], obj)


def stem_channels(net: nn.Module) -> int | None:
    """Input channels of the first convolution (``None``: no convolution)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Conv3d):
            return int(m.in_channels)
    return None


def build_model(
    arch: str,
    in_channels: int,
    num_outputs: int,
    image_size: int = 28,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    factory: str | None = None,
    weights: str | Path | None = None,
    head: str | None = None,
) -> Normalize:
    """A fresh classifier wrapped in :class:`Normalize` (uint8 pixels in, ``num_outputs``
    logits out).

    ``arch``: a built-in (``cnn``, ``resnet18``, ``googlenet``, ``alexnet``: stems take
    ``in_channels``) or ``torchvision:NAME`` (any torchvision classification builder,
    ``num_classes=num_outputs``, its stem as torchvision builds it). ``factory``
    (``package.module:callable``) overrides ``arch``: ``callable(num_outputs)``.
    ``weights``: a local ``.pth`` state_dict loaded into the network (a head of another
    size is skipped and stays fresh). ``head``: the head's attribute path (default:
    found, :func:`find_head`). A 3-channel stem with 1-channel data gets the grey channel
    repeated; any other channel mismatch is an error. ``mean``/``std`` ([0, 1] scale,
    one value or one per channel the network takes) default to MNIST's.
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    if num_outputs < 2:
        raise ValueError(f"num_outputs must be >= 2, got {num_outputs}")
    where = f"--model-factory {factory}" if factory else f"--arch {arch}"
    if factory:
        made: Any = load_factory(factory)(num_outputs)
        if not isinstance(made, nn.Module):
            raise ValueError(f"{where}: returned {type(made).__name__}, not an nn.Module")
        net: nn.Module = made
    elif arch.startswith("torchvision:"):
        net = _torchvision(arch.partition(":")[2], num_outputs, image_size)
    elif arch == "cnn":
        if image_size < 4:
            raise ValueError(f"cnn needs image_size >= 4, got {image_size}")
        net = SmallCNN(in_channels, num_outputs, image_size)
    elif arch == "resnet18":
        net = _resnet18(in_channels, num_outputs)
    elif arch == "googlenet":
        net = _googlenet(in_channels, num_outputs)
    elif arch == "alexnet":
        net = _alexnet(in_channels, num_outputs)
    else:
        raise ValueError(
            f"unknown arch {arch!r}: expected one of {', '.join(ARCHS)} or torchvision:NAME"
        )
    head_path = find_head(net, head)
    out = _module(net, head_path)
    assert isinstance(out, nn.Linear)
    if out.out_features != num_outputs:
        raise ValueError(
            f"{where}: the head '{head_path}' has {out.out_features} outputs, expected "
            f"{num_outputs}"
        )
    if weights is not None:
        load_weights(net, Path(weights), head_path)
    return wrap(net, in_channels, mean, std, head=head, where=where)


def wrap(
    net: nn.Module,
    in_channels: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    *,
    head: str | None = None,
    where: str = "the model",
) -> Normalize:
    """``net`` behind :class:`Normalize` for ``in_channels``-channel uint8 pixels."""
    stem = stem_channels(net)
    repeat = 1
    if stem is not None and stem != in_channels:
        if in_channels == 1 and stem == 3:
            repeat = 3
            log.info("%s: 1-channel data, 3-channel stem: the grey channel is repeated", where)
        else:
            raise ValueError(
                f"{where}: the network's first convolution takes {stem} channels but the "
                f"data has {in_channels} (the stem is never changed silently: convert the "
                "images or build the model for this data)"
            )
    channels = in_channels * repeat
    mean = tuple(mean) if mean is not None else MNIST_MEAN
    std = tuple(std) if std is not None else MNIST_STD
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"--mean/--std: the network takes {channels} channels, got {len(mean)} mean and "
            f"{len(std)} std values"
        )
    return Normalize(net, mean, std, repeat=repeat, head=head)


# ----------------------------------------------------------------------------- head

#: Where the classifier head usually is, tried in order (torchvision's layouts).
HEAD_CANDIDATES = ("fc", "classifier", "classifier[-1]", "heads.head", "head", "[-1]")

_PART = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def _module(root: nn.Module, path: str) -> nn.Module:
    """``path`` (``a.b``, ``classifier[-1]``, ``classifier.6``) inside ``root``."""
    mod: Any = root
    pos = 0
    for m in _PART.finditer(path):
        if m.start() != pos and path[pos : m.start()] != ".":
            raise ValueError(f"bad module path {path!r}")
        pos = m.end()
        name, index = m.group(1), m.group(2)
        if index is not None:
            mod = mod[int(index)]
        elif name.isdigit() and isinstance(mod, nn.Sequential | nn.ModuleList):
            mod = mod[int(name)]
        else:
            mod = getattr(mod, name)
    if pos != len(path) or not isinstance(mod, nn.Module):
        raise ValueError(f"bad module path {path!r}")
    return cast(nn.Module, mod)


def _modules_seen(net: nn.Module) -> str:
    top = ", ".join(f"{n} ({type(m).__name__})" for n, m in net.named_children()) or "none"
    lin = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    return f"top-level modules: {top}; nn.Linear layers: {', '.join(lin) or 'none'}"


def find_head(net: nn.Module, attr: str | None = None) -> str:
    """The classifier head's dotted path inside ``net`` (canonical: ``classifier.6``).

    ``attr`` given (``--head``): that module, which must be an ``nn.Linear``. Otherwise
    the first of :data:`HEAD_CANDIDATES` that is an ``nn.Linear``. The head must be the
    network's last operation (the export checks it).
    """
    tries = (attr,) if attr else HEAD_CANDIDATES
    for path in tries:
        try:
            mod = _module(net, path)
        except (AttributeError, IndexError, TypeError, ValueError):
            continue
        if isinstance(mod, nn.Linear):
            for name, m in net.named_modules():
                if m is mod:
                    return name
    what = (
        f"--head {attr!r} is not an nn.Linear"
        if attr
        else (f"no classifier head found (tried {', '.join(HEAD_CANDIDATES)})")
    )
    if not any(isinstance(m, nn.Linear) for m in net.modules()):
        what = "no nn.Linear head at all (the head must be a plain nn.Linear)"
    raise ValueError(f"{type(net).__name__}: {what}; {_modules_seen(net)}; name it with --head")


def _head_path(model: nn.Module) -> str:
    if isinstance(model, Normalize):
        return "net." + find_head(model.net, getattr(model, "head", None))
    return find_head(model)


def head_of(model: nn.Module) -> nn.Linear:
    """The classifier head (:func:`find_head`; inside :class:`Normalize`, its ``net``)."""
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


# ----------------------------------------------------------------------------- weights


def clean_state_dict(state: Any, where: str) -> dict[str, torch.Tensor]:
    """A state_dict as people save it: maybe inside ``{"model": ...}`` /
    ``{"state_dict": ...}``, maybe with DDP's ``module.`` or ``torch.compile``'s
    ``_orig_mod.`` prefixes. Returns plain ``name -> tensor``."""
    if isinstance(state, dict):
        for key in ("model", "state_dict", "model_state_dict", "net"):
            inner = state.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                state = inner
                break
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{where}: not a state_dict (a mapping of names to tensors)")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def load_state(
    net: nn.Module, state: dict[str, torch.Tensor], where: str, *, skip_head: str | None = None
) -> None:
    """Load ``state`` into ``net`` strictly, with an error that names the keys that do not
    fit; ``skip_head``: keys under that path with another shape are left fresh."""
    own = net.state_dict()
    state = dict(state)
    if skip_head is not None:
        for k in [k for k in state if k.startswith(skip_head + ".")]:
            if k in own and own[k].shape != state[k].shape:
                log.info("%s: %s has shape %s, the new head %s: left fresh", where, k,
                         tuple(state[k].shape), tuple(own[k].shape))  # fmt: skip
                state[k] = own[k]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise ValueError(f"{where}: state_dict does not fit the model ({'; '.join(parts)})")
    net.load_state_dict(state, strict=True)


def load_weights(net: nn.Module, path: Path, head_path: str) -> None:
    """``--weights FILE``: a local state_dict (nothing is downloaded). A head trained
    for another number of classes is skipped: it stays fresh for this task."""
    if not path.is_file():
        raise ValueError(f"--weights {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"--weights {path}: cannot read a state_dict: {e}") from e
    state = clean_state_dict(obj, f"--weights {path}")
    if any(k.startswith("net.") for k in state) and "scale" in state:  # our own wrapper
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    load_state(net, state, f"--weights {path}", skip_head=head_path)
