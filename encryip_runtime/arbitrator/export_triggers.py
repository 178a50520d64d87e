"""``export-triggers``: the vault's trigger inputs as PNG files and ``triggers.npy``,
so an investigator can query a suspect service and feed the labels to verify-labels.

The trigger inputs are secret (they identify the release): the files are written
0600. Querying a suspect service reveals them to that service; use them once.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from encryip_runtime.arbitrator.inputs import load_vault_with_arrays
from encryip_runtime.formats.jsonio import atomic_write_bytes, write_json

__all__ = ["export_triggers"]

log = logging.getLogger(__name__)


def export_triggers(vault_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``trigger_000.png`` ... (1 or 3 channels), ``triggers.npy`` and ``triggers.json``."""
    from PIL import Image

    vault, arrays, _ = load_vault_with_arrays(Path(vault_path))
    out = Path(out_dir)
    x = arrays.trigger_inputs  # (T, C, H, W) uint8
    written: list[Path] = []
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    atomic_write_bytes(out / "triggers.npy", buf.getvalue(), secret=True)
    written.append(out / "triggers.npy")
    c = x.shape[1]
    digits = max(3, len(str(len(x) - 1)))
    pngs: list[str] = []
    if c in (1, 3):
        for i, img in enumerate(x):
            arr = img[0] if c == 1 else np.transpose(img, (1, 2, 0))
            png = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(arr), mode="L" if c == 1 else "RGB").save(
                png, format="PNG"
            )
            name = f"trigger_{i:0{digits}d}.png"
            atomic_write_bytes(out / name, png.getvalue(), secret=True)
            written.append(out / name)
            pngs.append(name)
    else:
        log.warning("%d channels: no PNG form; use triggers.npy", c)
    write_json(
        out / "triggers.json",
        {
            "format": "encryip-triggers/1",
            "count": len(x),
            "shape": list(x.shape[1:]),
            "dtype": "uint8",
            "files": pngs,
            "array": "triggers.npy",
            "answer_format": "labels.json: a JSON list of the class index (or class name) the "
            "service returns for each trigger, in this order; null where unanswered",
            "class_names": list(vault.class_names),
        },
        secret=True,
    )
    written.append(out / "triggers.json")
    return written
