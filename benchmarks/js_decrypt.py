"""Decryption per row: the JavaScript SDK (WebAssembly libsodium, Node) against the
Python SDK, side by side on the same ciphertexts, in one run.

    python -m benchmarks.js_decrypt [--rows 2000] [--repeats 3]

Needs node and sdk/js/node_modules (scripts/bootstrap.sh). The last line is JSON with
per format (``v1``, ``v2``): ``js_us_per_row``, ``python_us_per_row`` and ``js_vs_python``
(target ≤ 3), plus where the JavaScript time goes (element decoding, the scalar
multiplications a·u1 + Σ b_i·u_(i+1), sub + hash; format 2 adds its table lookup).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from encryip_runtime.client import decrypt_batch
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.formats.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
JS_PARTS = ("decode_us", "a_u1_us", "b_terms_us", "sub_hash_us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default="1,2", help="secure format versions to measure")
    args = ap.parse_args()
    summary = {f"v{v}": measure(int(v), args.rows, args.repeats) for v in args.formats.split(",")}
    print(json.dumps(summary))


def measure(version: int, rows: int, repeats: int) -> dict[str, Any]:
    """Python and JS on the same ``rows`` ciphertexts of one format; prints a summary."""
    from tests.tiny_release import make_tiny_release

    with tempfile.TemporaryDirectory() as tmp:
        rel = make_tiny_release(Path(tmp) / "r", "secure", ("acme",), secure_format=version)
        key = LicenseeKey.load(rel.key("acme"))
        manifest = Manifest.load(rel.root / "manifest.json")
        assert manifest.codebook is not None
        scheme = manifest.scheme
        picked = manifest.codebook[[i % len(manifest.codebook) for i in range(rows)]]
        wire = [bytes(r) for r in scheme.to_wire(scheme.sampdist(manifest.pk, picked))]
        labels = decrypt_batch(wire, key)  # warm: format 2 builds its label table here
        data = Path(tmp) / "bench.json"
        data.write_text(
            json.dumps(
                {
                    "key": json.loads(rel.key("acme").read_text()),
                    "ciphertexts": [w.hex() for w in wire],
                    "labels": [int(y) for y in labels],
                }
            )
        )
        # Interleaved rounds (Python, then JS, again and again), best of each: the machine's
        # load moves between them less than between two long blocks.
        best = float("inf")
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            decrypt_batch(wire, key)
            best = min(best, time.perf_counter() - t0)
            out = subprocess.run(
                ["node", "bench/decrypt.js", str(data), "1"],
                cwd=ROOT / "sdk" / "js",
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        py_us = best * 1e6 / len(wire)
    js = {k: min(r[k] for r in runs) for k in ("us_per_row", *JS_PARTS)}
    print(f"format {version}, rows: {len(wire)}")
    print(f"python SDK: {py_us:8.1f} µs/row")
    print(f"JS SDK    : {js['us_per_row']:8.1f} µs/row  ({js['us_per_row'] / py_us:.2f}x Python)")
    print(
        f"  JS parts (µs/row): decode {js['decode_us']:.1f}, a·u1 {js['a_u1_us']:.1f}, "
        f"Σ b_i·u_(i+1) + lookup {js['b_terms_us']:.1f}, sub + SHA-256 {js['sub_hash_us']:.1f}"
    )
    return {
        "rows": len(wire),
        "python_us_per_row": round(py_us, 2),
        "js_us_per_row": round(js["us_per_row"], 2),
        "js_vs_python": round(js["us_per_row"] / py_us, 3),
        "js_parts_us": {k: round(js[k], 2) for k in JS_PARTS},
    }


if __name__ == "__main__":
    main()
