"""``encryip predict --endpoint HOST:PORT --key KEY --input FILE.npy|IMAGE...``.

Sends the inputs to the server, checks the key against the server's public key, and
decrypts the confused labels locally. Prints ``input<TAB>label<TAB>class name`` per row
(``--json`` for machine-readable output: the model, its public-key fingerprint and one
row per input, which ``encryip decrypt --predictions`` reads back).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encryip_runtime.cli.connection import add_connection_arguments, connect
from encryip_runtime.cli.errors import CommandError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from encryip_runtime.client import ModelInfo
from encryip_runtime.cli.options import add_command, add_key_passphrase_argument

NAME = "predict"
_NPY = (".npy",)


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        subparsers, NAME, parents, run, "predict on the server, decrypt locally with your key"
    )
    add_connection_arguments(p)
    p.add_argument("--key", type=Path, required=True, help="licensee key file")
    add_key_passphrase_argument(p)
    p.add_argument(
        "--input",
        type=Path,
        nargs="+",
        required=True,
        metavar="FILE",
        help=".npy array ([N, C, H, W] or [C, H, W], dtype of the model input) or image files",
    )
    p.add_argument("--batch-size", type=int, default=64, help="rows per request (default 64)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _load_npy(path: Path, problems: list[str]) -> npt.NDArray[Any] | None:
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy's header parser raises TokenError, MemoryError, ...
        problems.append(f"--input: '{path}' is not a readable .npy file ({exc})")
        return None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        problems.append(f"--input: '{path}' must hold a numeric array")
        return None
    if arr.ndim == 0:
        problems.append(f"--input: '{path}' holds a scalar, not an array of inputs")
        return None
    if arr.size == 0:
        problems.append(f"--input: '{path}' holds no inputs (shape {list(arr.shape)})")
        return None
    return arr


def _load_image(path: Path, info: ModelInfo, problems: list[str]) -> npt.NDArray[np.uint8] | None:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    channels, height, width = (int(d) for d in info.input_shape[1:4])
    try:
        with Image.open(path) as opened:
            img = opened.convert("L" if channels == 1 else "RGB")
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # not an OSError: a header claiming 8 Gpx
        problems.append(f"--input: '{path}' is refused: {exc}")
        return None
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        MemoryError,
        EOFError,
        # PIL's decoders report a corrupt chunk as SyntaxError ("broken PNG file") and a
        # truncated header field as struct.error / IndexError
        SyntaxError,
        struct.error,
        IndexError,
    ) as exc:
        problems.append(f"--input: '{path}' is not a readable image ({exc})")
        return None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape[0] != channels:
        problems.append(f"--input: '{path}': model takes {channels} channels")
        return None
    return arr[None]


def _shape_problem(path: Path, shape: tuple[int, ...], info: ModelInfo) -> str:
    """The file's own shape against the model's (before a batch axis is added)."""
    want = [None if d < 0 else int(d) for d in info.input_shape]
    row = want[1:]
    got = list(shape)
    fits = len(got) == len(want) and all(
        w is None or w == g for w, g in zip(want, got, strict=True)
    )
    fits = fits or (
        len(got) == len(row) and all(w is None or w == g for w, g in zip(row, got, strict=True))
    )
    if fits:
        return ""
    shown = ", ".join("N" if d is None else str(d) for d in want)
    one = ", ".join(str(d) for d in row)
    return (
        f"--input: '{path}' has shape {got}; the model takes [{shown}] "
        f"(or one input of shape [{one}])"
    )


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.client import RemoteError, check_key_matches, decrypt_batch
    from encryip_runtime.exceptions import EncryIPError
    from encryip_runtime.formats.keyfile import LicenseeKey

    # 1. Everything checkable offline, all problems at once.
    problems: list[str] = []
    if args.batch_size < 1:
        problems.append(f"--batch-size: must be at least 1 (got {args.batch_size})")
    key = None
    try:
        key = LicenseeKey.load(args.key)
    except OSError as exc:
        problems.append(f"--key: cannot read '{args.key}': {exc.strerror}")
    except EncryIPError as exc:
        problems.append(f"--key: {exc}")
    arrays: dict[Path, npt.NDArray[Any]] = {}
    for path in args.input:
        if path.is_dir():
            problems.append(f"--input: '{path}' is a directory; give the files in it")
        elif not path.is_file():
            problems.append(f"--input: no such file: '{path}'")
        elif path.suffix.lower() in _NPY:
            arr = _load_npy(path, problems)
            if arr is not None:
                arrays[path] = arr
    client = connect(args, problems)
    if problems or key is None or client is None:
        raise UsageError(problems)

    with client:
        # 2. The server's model: the key must belong to it; images are shaped for it.
        try:
            info = client.info()
        except RemoteError as exc:
            raise CommandError(str(exc)) from None
        try:
            check_key_matches(key, info, source=f"--key '{args.key}'")
        except EncryIPError as exc:
            raise CommandError(str(exc)) from None
        batches: list[tuple[str, npt.NDArray[Any]]] = []
        for path in args.input:
            if path in arrays:
                arr = arrays[path]
                if arr.ndim == len(info.input_shape) - 1:
                    arr = arr[None]
                problem = _shape_problem(path, arrays[path].shape, info)
                if problem:
                    problems.append(problem)
                    continue
            else:
                img = _load_image(path, info, problems)
                if img is None:
                    continue
                arr = img
            batches.append((str(path), arr))
        if problems:
            raise UsageError(problems)

        # 3. Predict in batches, decrypt locally.
        rows: list[dict[str, Any]] = []
        for name, arr in batches:
            for start in range(0, len(arr), args.batch_size):
                chunk = arr[start : start + args.batch_size]
                try:
                    pred = client.predict(chunk)
                except RemoteError as exc:
                    raise CommandError(f"{name}: {exc}") from None
                labels = decrypt_batch(pred, key)
                for i, (ct, y) in enumerate(zip(pred, labels, strict=True)):
                    index = start + i
                    rows.append({
                        "input": name,
                        "index": index,
                        "label": int(y),
                        "class_name": info.class_names[int(y)],
                        "ciphertext": ct.hex(),
                    })  # fmt: skip
    if args.json:
        # What `encryip decrypt --predictions` reads back: the key it is checked against
        # is named by the public key's fingerprint (the server's, which the key matched).
        out = {
            "format": "encryip-predictions/1",
            "endpoint": client.endpoint,
            "protocol": client.protocol,
            "model_name": info.model_name,
            "profile": info.profile,
            "num_classes": info.num_classes,
            "pk_fingerprint": key.pk_fingerprint,
            "manifest_digest": info.manifest_digest,
            "ciphertext_size": info.ciphertext_size,
            "predictions": rows,
        }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for r in rows:
            print(f"{r['input']}[{r['index']}]\t{r['label']}\t{r['class_name']}")
    return 0
