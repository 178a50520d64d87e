"""Model builders: every architecture runs on 28×28 uint8 input and ends in its head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from exporter.models import ARCHS, Normalize, build_model, head_of, replace_head


@pytest.mark.parametrize(
    ("arch", "channels"), [(a, 1) for a in ARCHS] + [("cnn", 3), ("resnet18", 3)]
)
def test_arch_forward_28x28(arch: str, channels: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, channels, 13, 28).eval()
    x = torch.randint(0, 256, (2, channels, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 13) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    head = head_of(model)
    assert isinstance(head, nn.Linear) and head.out_features == 13


def test_head_is_last_op() -> None:
    """The logits are exactly head(features): nothing runs after the final Linear."""
    model = build_model("resnet18", 1, 7).eval()
    seen: dict[str, torch.Tensor] = {}
    head_of(model).register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        y = model(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8))
    assert torch.equal(seen["out"], y)


def test_torchvision_recognisable() -> None:
    from torchvision.models import AlexNet, GoogLeNet, ResNet

    r = build_model("resnet18", 1, 10).net
    assert isinstance(r, ResNet)
    assert r.conv1.kernel_size == (7, 7) and r.conv1.stride == (2, 2)
    g = build_model("googlenet", 1, 10).net
    assert isinstance(g, GoogLeNet) and g.aux1 is None and not g.transform_input
    assert isinstance(build_model("alexnet", 1, 10).net, AlexNet)


def test_normalize_inside_model() -> None:
    inner = nn.Flatten()
    m = Normalize(inner, mean=(0.5,), std=(0.25,))
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    y = m(x)
    assert torch.allclose(y, torch.tensor([[-2.0, 2.0]]), atol=1e-6)
    with pytest.raises(ValueError):
        Normalize(inner, mean=(0.5,), std=(0.0,))


def test_replace_head_and_user_module() -> None:
    user = Normalize(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)),
                     (0.5,), (0.5,))  # fmt: skip
    assert head_of(user).out_features == 3
    new = replace_head(user, 12)
    assert head_of(user) is new and new.in_features == 8
    assert user(torch.zeros(1, 1, 4, 4, dtype=torch.uint8)).shape == (1, 12)
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        head_of(nn.Conv2d(1, 1, 1))


def test_build_model_rejects() -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg", 1, 10)
    with pytest.raises(ValueError, match="num_outputs"):
        build_model("cnn", 1, 1)
    with pytest.raises(ValueError, match="in_channels"):
        build_model("cnn", 2, 10)


def test_torchvision_arch_head_and_grey_repeat() -> None:
    """torchvision:NAME keeps torchvision's stem: 1-channel data gets the grey channel
    repeated inside the model (and so inside the graph); the head is found."""
    m = build_model("torchvision:mobilenet_v3_small", 1, 5, 32, mean=(0.5,), std=(0.25,))
    assert m.repeat == 3 and len(m.mean) == 3
    assert head_of(m) is m.net.classifier[-1]  # type: ignore[index]
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    rgb = x.repeat(1, 3, 1, 1)
    torch.testing.assert_close(m.eval()(x), m(rgb[:, :1]))
    ref = m.net((rgb.float() / 255 - 0.5) / 0.25)
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-4)


def test_head_found_named_or_explained() -> None:
    from exporter.models import find_head

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3)
            self.out_proj = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out_proj(self.body(x).mean((2, 3)))

    with pytest.raises(ValueError, match=r"body \(Conv2d\), out_proj \(Linear\).*--head"):
        find_head(Odd())
    assert find_head(Odd(), "out_proj") == "out_proj"
    from torchvision.models import vit_b_16

    assert find_head(vit_b_16(num_classes=3, image_size=32)) == "heads.head"


def test_rgb_data_one_channel_stem_is_refused() -> None:
    from exporter.models import wrap

    with pytest.raises(ValueError, match="takes 1 channels but the data has 3"):
        wrap(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)), 3, None, None)


def test_weights_file_loads_backbone_and_leaves_other_head_fresh(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--weights: a local state_dict for 1000 classes starts a 5-class model; nothing is
    downloaded; a file that does not fit is refused with the keys named."""
    from torchvision.models import resnet18

    torch.manual_seed(1)
    src = resnet18(num_classes=1000)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "r18.pth")
    m = build_model("torchvision:resnet18", 3, 5, 32, weights=tmp_path / "r18.pth")
    torch.testing.assert_close(m.net.conv1.weight, src.conv1.weight)  # type: ignore[union-attr]
    assert head_of(m).out_features == 5
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth.*missing"):
        build_model("torchvision:resnet18", 3, 5, 32, weights=tmp_path / "bad.pth")
