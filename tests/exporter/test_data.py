"""Dataset loaders: real MNIST / Fashion-MNIST files, npz, ImageFolder, synthetic, IDX errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from exporter.data import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    DataError,
    ImageDataset,
    ImageFolderDataset,
    channel_stats,
    load_dataset,
    load_idx_dataset,
    load_image_folder,
    load_npz,
    make_loader,
    make_synthetic,
    read_idx,
    search_dirs,
    stratified_indices,
)


def _found(name: str) -> bool:
    return any((d / "train-images-idx3-ubyte").exists() or
               (d / "train-images-idx3-ubyte.gz").exists() for d in search_dirs(name))  # fmt: skip


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not _found("mnist"), reason="MNIST not installed: run scripts/bootstrap.sh")
def test_mnist_real_files() -> None:
    d = load_dataset("mnist", train_subset=500, test_subset=200, seed=3)
    assert d.name == "mnist"
    assert d.class_names == MNIST_CLASSES
    assert d.train.images.shape == (500, 1, 28, 28) and d.train.images.dtype == torch.uint8
    assert d.test.images.shape == (200, 1, 28, 28)
    assert d.train.labels.dtype == torch.int64
    # stratified: every class present in close to its share
    counts = torch.bincount(d.train.labels, minlength=10)
    assert counts.min() >= 40 and counts.max() <= 60
    assert int(d.train.images.max()) == 255 and int(d.train.images.min()) == 0
    # same seed, same subset; another seed, another subset
    again = load_dataset("mnist", train_subset=500, test_subset=200, seed=3)
    assert torch.equal(again.train.images, d.train.images)
    other = load_dataset("mnist", train_subset=500, seed=4)
    assert not torch.equal(other.train.images, d.train.images)


@pytest.mark.skipif(not _found("fashion-mnist"), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_real_files() -> None:
    d = load_dataset("fashion-mnist", train_subset=300, test_subset=100)
    assert d.class_names == FASHION_MNIST_CLASSES
    assert d.train.images.shape == (300, 1, 28, 28)
    assert torch.bincount(d.test.labels, minlength=10).tolist() == [10] * 10
    assert load_dataset("fashion_mnist", train_subset=10).class_names == FASHION_MNIST_CLASSES


# ----------------------------------------------------------------------------- IDX


def _idx(path: Path, arr: np.ndarray, *, gz: bool = False, magic: bytes | None = None) -> Path:
    header = (magic or bytes([0, 0, 0x08, arr.ndim])) + b"".join(
        struct.pack(">I", s) for s in arr.shape
    )
    raw = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def _fake_mnist(root: Path, *, gz: bool, n: int = 20) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        _idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz=gz)
        _idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz=gz)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_raw_and_gz(tmp_path: Path, gz: bool) -> None:
    _fake_mnist(tmp_path, gz=gz)
    d = load_idx_dataset(tmp_path, MNIST_CLASSES)
    assert d.train.images.shape == (20, 1, 28, 28)
    assert d.test.labels.tolist() == [i % 10 for i in range(20)]


def test_torchvision_root_layout(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "MNIST" / "raw", gz=False, n=30)
    d = load_dataset("mnist", root=tmp_path)
    assert len(d.train) == 30


def test_missing_dataset_lists_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.data as data

    monkeypatch.setattr(data, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(data, "_DEBIAN_FASHION", tmp_path / "debian")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENCRYIP_DATA", raising=False)
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", root=tmp_path / "mine")
    msg = str(e.value)
    assert "not found" in msg
    assert str(tmp_path / "mine" / "FashionMNIST" / "raw") in msg
    assert str(tmp_path / "debian") in msg
    assert "--download" in msg


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda b: b[:2], "truncated IDX file"),
        (lambda b: b"\x01\x02" + b[2:], "bad IDX magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "bad IDX magic"),
        (lambda b: b[:-5], "truncated IDX file"),
        (lambda b: b + b"\0\0", "oversized IDX file"),
        (lambda b: b[:10], "truncated IDX header"),
    ],
)
def test_idx_malformed(tmp_path: Path, mutate, expect: str) -> None:  # type: ignore[no-untyped-def]
    good = _idx(tmp_path / "x-idx3-ubyte", np.zeros((3, 4, 4)))
    good.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(DataError, match=expect) as e:
        read_idx(good)
    assert str(good) in str(e.value)


def test_idx_wrong_ndim_and_count_mismatch(tmp_path: Path) -> None:
    p = _idx(tmp_path / "a", np.zeros((3, 4)))
    with pytest.raises(DataError, match="2 dimensions, expected 3"):
        read_idx(p, ndim=3)
    _fake_mnist(tmp_path / "m", gz=False)
    _idx(tmp_path / "m" / "t10k-labels-idx1-ubyte", np.zeros(7))
    with pytest.raises(DataError, match=r"20 images but .* 7 labels"):
        load_idx_dataset(tmp_path / "m", MNIST_CLASSES)
    _idx(tmp_path / "m" / "t10k-labels-idx1-ubyte", np.full(20, 12))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\)"):
        load_idx_dataset(tmp_path / "m", MNIST_CLASSES)


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    p = tmp_path / "x.gz"
    p.write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(DataError, match="cannot read IDX"):
        read_idx(p)


# ----------------------------------------------------------------------------- npz


def test_npz_xy_with_class_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 12, 12, 3), dtype=np.uint8)  # NHWC
    y = np.arange(50) % 5
    p = tmp_path / "d.npz"
    np.savez(p, x=x, y=y, class_names=np.array(["a", "b", "c", "d", "e"]))
    d = load_dataset(p, test_fraction=0.2, seed=1)
    assert d.class_names == ("a", "b", "c", "d", "e")
    assert d.train.images.shape == (40, 3, 12, 12) and d.test.images.shape == (10, 3, 12, 12)
    assert torch.bincount(d.test.labels).tolist() == [2] * 5
    # the split is a partition of the file's rows
    allx = torch.cat([d.train.images, d.test.images]).permute(0, 2, 3, 1).numpy()
    assert sorted(map(bytes, allx)) == sorted(map(bytes, x))


def test_npz_split_form_and_float_pixels(tmp_path: Path) -> None:
    p = tmp_path / "k.npz"
    np.savez(
        p,
        x_train=np.ones((6, 8, 8), np.float32) * 0.5,
        y_train=np.array([0, 1, 2, 0, 1, 2]),
        x_test=np.zeros((3, 8, 8), np.float32),
        y_test=np.array([2, 1, 0]),
    )
    d = load_npz(p)
    assert d.train.images.shape == (6, 1, 8, 8)
    assert int(d.train.images[0, 0, 0, 0]) == 128
    assert d.class_names == ("0", "1", "2")
    p2 = tmp_path / "images.npz"
    np.savez(p2, images=np.zeros((10, 1, 8, 8), np.uint8), labels=np.arange(10) % 2)
    assert load_npz(p2).num_classes == 2


@pytest.mark.parametrize(
    ("arrays", "expect"),
    [
        ({"a": np.zeros(3)}, "expected keys x/y"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(5, int)}, r"field 'y'.*\[4\]"),
        ({"x": np.zeros((4, 8), np.uint8), "y": np.zeros(4, int)}, r"field 'x'.*\(4, 8\)"),
        ({"x": np.zeros((4, 5, 8, 8), np.uint8), "y": np.zeros(4, int)}, "channel axis"),
        ({"x": np.full((4, 8, 8), 300), "y": np.zeros(4, int)}, r"\[0, 255\]"),
        ({"x": np.full((4, 8, 8), 2.5e3), "y": np.zeros(4, int)}, "float pixels"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.full(4, 0.5)}, "must be integers"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.full(4, -1)}, ">= 0"),
        (
            {"x": np.zeros((4, 8, 8), np.uint8), "y": np.arange(4), "class_names": np.array(["a"])},
            "class_names' has 1 names",
        ),
        ({"x_train": np.zeros((4, 8, 8)), "y_train": np.zeros(4, int)}, "x_test"),
    ],
)
def test_npz_malformed(tmp_path: Path, arrays: dict[str, np.ndarray], expect: str) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=expect) as e:
        load_dataset(p)
    assert str(p) in str(e.value)


def test_npz_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(p)
    with pytest.raises(DataError, match="no such"):
        load_dataset(tmp_path / "absent.npz")


# ----------------------------------------------------------------------------- ImageFolder


def _png(path: Path, value: int, size: tuple[int, int] = (10, 10), mode: str = "L") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(path)


def test_image_folder_flat_and_split(tmp_path: Path) -> None:
    for c, v in (("cat", 10), ("dog", 200)):
        for i in range(5):
            _png(tmp_path / "flat" / c / f"{i}.png", v)
            _png(tmp_path / "split" / "train" / c / f"{i}.png", v)
        _png(tmp_path / "split" / "test" / c / "t.png", v)
    (tmp_path / "flat" / "cat" / "notes.txt").write_text("ignored")
    d = load_dataset(tmp_path / "flat", test_fraction=0.2)
    assert d.class_names == ("cat", "dog")
    assert isinstance(d.train, ImageFolderDataset)  # streamed: nothing decoded yet
    assert d.train.arrays()[0].shape == (8, 1, 10, 10) and len(d.test) == 2
    assert set(d.test.labels.tolist()) == {0, 1}
    s = load_image_folder(tmp_path / "split")
    assert len(s.train) == 10 and len(s.test) == 2
    x, y = s.test.arrays()
    assert int(x[y == 1].max()) == 200


def test_image_folder_rgb_and_resize(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "0.png", 50, (12, 12), "RGB")
    _png(tmp_path / "a" / "1.png", 50, (12, 12), "RGB")
    _png(tmp_path / "b" / "0.png", 90, (20, 16), "RGB")
    _png(tmp_path / "b" / "1.png", 90, (20, 16), "RGB")
    whole = load_image_folder(tmp_path, test_fraction=0.5)
    with pytest.raises(DataError, match="20x16 but the others are 12x12"):
        whole.train.arrays(), whole.test.arrays()
    d = load_image_folder(tmp_path, image_size=8, test_fraction=0.5)
    assert d.train.arrays()[0].shape == (2, 3, 8, 8)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class folders"):
        (tmp_path / "empty").mkdir()
        load_image_folder(tmp_path / "empty")
    (tmp_path / "e" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="'a' has no images"):
        load_image_folder(tmp_path / "e")
    _png(tmp_path / "c" / "a" / "0.png", 1)
    (tmp_path / "c" / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"1\.png: cannot decode"):  # read when used
        load_image_folder(tmp_path / "c", test_fraction=0.5).train.arrays()
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"0\.png: cannot decode"):  # the first one: at once
        load_image_folder(tmp_path / "d")
    _png(tmp_path / "s" / "train" / "a" / "0.png", 1)
    _png(tmp_path / "s" / "test" / "b" / "0.png", 1)
    with pytest.raises(DataError, match="different class folders"):
        load_image_folder(tmp_path / "s")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset(tmp_path / "nope")


# ----------------------------------------------------------------------------- synthetic etc.


def test_synthetic_deterministic_and_balanced() -> None:
    a = make_synthetic(200, 50, seed=5)
    b = make_synthetic(200, 50, seed=5)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(make_synthetic(200, 50, seed=6).train.images, a.train.images)
    assert a.train.images.shape == (200, 1, 16, 16)
    assert torch.bincount(a.train.labels).tolist() == [20] * 10
    rgb = make_synthetic(20, 10, image_size=28, channels=3, num_classes=4)
    assert rgb.image_shape == (3, 28, 28)
    assert load_dataset("synthetic", train_subset=100, test_subset=30).train.images.shape[0] == 100


def test_synthetic_is_learnable_by_nearest_prototype() -> None:
    """Sanity: class means separate the test set (so a tiny CNN can learn it fast)."""
    d = make_synthetic(500, 200, seed=0)
    x = d.train.images.float().flatten(1)
    means = torch.stack([x[d.train.labels == k].mean(0) for k in range(10)])
    pred = torch.cdist(d.test.images.float().flatten(1), means).argmin(1)
    assert (pred == d.test.labels).float().mean() > 0.8


def test_stratified_indices() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    idx = stratified_indices(labels, 20, seed=0)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    assert np.bincount(labels[idx]).tolist() == [18, 2]
    assert len(stratified_indices(labels, 1000)) == 100
    with pytest.raises(DataError):
        stratified_indices(labels, 0)


def test_image_dataset_validates() -> None:
    with pytest.raises(DataError, match="uint8"):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ("a",))
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), ("a", "b"))


def test_download_uses_torchvision_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download=True asks torchvision to fetch into ROOT/MNIST/raw, then reads it from there."""
    import torchvision.datasets as tvd

    import exporter.data as data

    monkeypatch.setattr(data, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENCRYIP_DATA", raising=False)
    calls: list[tuple[str, bool, bool]] = []

    class FakeMNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            _fake_mnist(Path(root) / "MNIST" / "raw", gz=True, n=12)

    monkeypatch.setattr(tvd, "MNIST", FakeMNIST)
    with pytest.raises(DataError, match="not found"):
        load_dataset("mnist", root=tmp_path / "dl")
    assert calls == []
    d = load_dataset("mnist", root=tmp_path / "dl", download=True)
    assert len(d.train) == 12 and calls[0] == (str(tmp_path / "dl"), True, True)


# ----------------------------------------------------------------------------- streaming


def _rgb_folder(root: Path, n_per_class: int = 6) -> None:
    """JPEG and PNG of assorted sizes, one grey image among them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, cname in enumerate(("apple", "pear", "plum")):
        (root / cname).mkdir(parents=True)
        for i in range(n_per_class):
            w, h = int(rng.integers(20, 48)), int(rng.integers(20, 48))
            px = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            px[..., k] = 255 - px[..., k] // 4  # a class tint
            im = Image.fromarray(px)
            if i == 0:
                im = im.convert("L")
            im.save(root / cname / (f"{i}.jpg" if i % 2 else f"{i}.png"))


def test_image_folder_streams_rgb_any_size(tmp_path: Path) -> None:
    """Mixed sizes, JPEG + PNG, one grey file: each item is resized + center-cropped like
    torchvision's Resize(S) + CenterCrop(S), and RGB (the first image decides)."""
    from PIL import Image
    from torchvision import transforms as T

    _rgb_folder(tmp_path / "f")
    d = load_image_folder(tmp_path / "f", image_size=16, test_fraction=0.25, grayscale=False)
    assert isinstance(d.train, ImageFolderDataset) and d.image_shape == (3, 16, 16)
    assert len(d.train) + len(d.test) == 18
    ref = T.Compose([T.Resize(16), T.CenterCrop(16), T.PILToTensor()])
    for i in range(len(d.train)):
        x, y = d.train[i]
        assert x.dtype == torch.uint8 and x.shape == (3, 16, 16)
        assert y == int(d.train.labels[i])
        with Image.open(d.train.path(i)) as im:
            assert torch.equal(x, ref(im.convert("RGB")))
    aug = d.train.augmented()
    torch.manual_seed(0)
    xa = torch.stack([aug[i][0] for i in range(len(aug))])
    assert xa.shape == (len(aug), 3, 16, 16)
    assert not torch.equal(xa, torch.from_numpy(d.train.arrays()[0]))


def test_loader_shards_and_workers(tmp_path: Path) -> None:
    _rgb_folder(tmp_path / "f", n_per_class=7)
    d = load_image_folder(tmp_path / "f", image_size=8, test_fraction=0.2)
    assert d.image_shape == (1, 8, 8)  # the first image (grey) decides
    d = load_image_folder(tmp_path / "f", image_size=8, test_fraction=0.2, grayscale=False)
    n = len(d.train)
    seen = []
    for rank in (0, 1):
        loader = make_loader(d.train, 4, shuffle=True, seed=3, workers=2, rank=rank, world=2)
        loader.sampler.set_epoch(1)  # type: ignore[attr-defined]
        ys = []
        for x, y in loader:
            assert x.dtype == torch.uint8 and x.shape[1:] == (3, 8, 8) and y.dtype == torch.int64
            ys.append(y)
        seen.append(torch.cat(ys))
        assert len(seen[-1]) == n // 2  # the remainder of n / world is dropped
    order = list(torch.utils.data.DistributedSampler(d.train, 2, 0, seed=3, drop_last=True))
    assert len(set(order)) == n // 2  # each rank: distinct items
    # in-memory sets take the batched fast path and give the same kind of batches
    mem = make_synthetic(40, 10, seed=0).train
    xb, yb = next(iter(make_loader(mem, 16, shuffle=True)))
    assert xb.shape == (16, 1, 16, 16) and yb.shape == (16,) and yb.dtype == torch.int64


def test_channel_stats_streamed_equals_numpy(tmp_path: Path) -> None:
    _rgb_folder(tmp_path / "f")
    d = load_image_folder(tmp_path / "f", image_size=12, test_fraction=0.2, grayscale=False)
    mean, std = channel_stats(d.train, workers=1)
    x = d.train.arrays()[0].astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), atol=1e-5)
    assert mean[0] != mean[1]  # per channel


def test_in_memory_augment_keeps_shape_and_varies() -> None:
    d = make_synthetic(20, 10, seed=0).train
    aug = d.augmented()
    torch.manual_seed(0)
    x, y = aug.__getitems__(list(range(8)))
    assert x.shape == (8, 1, 16, 16) and x.dtype == torch.uint8
    assert torch.equal(y, d.labels[:8]) and not torch.equal(x, d.images[:8])
    xs, ys = d.arrays([3, 1])
    assert np.array_equal(xs, d.images[[3, 1]].numpy()) and ys.tolist() == d.labels[[3, 1]].tolist()


def test_image_folder_resize_then_crop_like_imagenet_eval(tmp_path: Path) -> None:
    """--resize R --image-size S = torchvision's Resize(R) + CenterCrop(S)."""
    from PIL import Image
    from torchvision import transforms as T

    _rgb_folder(tmp_path / "f")
    d = load_image_folder(tmp_path / "f", image_size=16, resize=20, grayscale=False)
    ref = T.Compose([T.Resize(20), T.CenterCrop(16), T.PILToTensor()])
    for i in (0, 5):
        with Image.open(d.train.path(i)) as im:  # type: ignore[attr-defined]
            assert torch.equal(d.train[i][0], ref(im.convert("RGB")))
    with pytest.raises(DataError, match="resize"):
        load_image_folder(tmp_path / "f", image_size=16, resize=8)
