"""Coverage-guided fuzzing (atheris) of every parser of outside bytes, bounded in time.

    python -m benchmarks.fuzz_atheris --seconds 60              # every target, 60 s each
    python -m benchmarks.fuzz_atheris --target wire_secure --seconds 300

Targets: wire ciphertexts (both profiles), element/scalar JSON (both), the manifest, key
and vault loaders, vault.npz, request tensors (decode + check, both services' dtype
names), BYTES tensors and ``encryip predict``'s ``.npy`` reader. Each target accepts a
value or an ``EncryIPError`` (or the CLI's problem list); anything else is a finding:
atheris prints the input and the traceback, and this script exits 1.

Each target runs in its own child process (atheris owns the process and exits when
done); ``--seconds`` bounds each one (``-max_total_time``). Not part of the test suite;
the hypothesis versions of the same properties are in tests/reliability/test_fuzz_parsers.py.
Needs ``pip install atheris`` (in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = (
    "wire_paper", "wire_secure", "json_paper", "json_secure", "manifest", "key", "vault",
    "npz", "tensor", "bytes_elements", "npy",
)  # fmt: skip


def _release(tmp: Path) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny_release import make_tiny_release

    return make_tiny_release(tmp / "release", "secure")


def build_target(name: str, tmp: Path) -> tuple[Callable[[bytes], None], list[bytes]]:
    """The one-input function for ``name`` and seed inputs for its corpus."""
    import numpy as np

    from encryip_runtime.crypto.profiles import make_scheme
    from encryip_runtime.exceptions import EncryIPError

    if name.startswith(("wire_", "json_")):
        scheme = make_scheme(name.split("_")[1], 10)
        family = scheme.gen(1)
        seed_cts = scheme.fake(family.pk, 2)
        if name.startswith("wire_"):

            def wire(data: bytes) -> None:
                try:
                    cts = scheme.from_wire(data)
                except EncryIPError:
                    return
                assert scheme.to_wire(cts).tobytes() == data, "accepted a non-canonical form"

            return wire, [scheme.to_wire(seed_cts).tobytes()]
        g = scheme.group

        def element_json(data: bytes) -> None:
            try:
                value = json.loads(data)
            except (ValueError, RecursionError):
                return
            for parse in (g.from_json, g.scalar_from_json):
                with contextlib.suppress(EncryIPError):
                    parse(value)

        return element_json, [json.dumps(g.to_json(seed_cts[:, 0])).encode()]

    if name in ("manifest", "key", "vault", "npz"):
        from encryip_runtime.formats.keyfile import LicenseeKey
        from encryip_runtime.formats.manifest import Manifest
        from encryip_runtime.formats.vault import Vault

        release = _release(tmp)
        src = {
            "manifest": release.root / "manifest.json",
            "key": release.key("acme"),
            "vault": release.paths.vault,
            "npz": release.root / "vault.npz",
        }[name]
        path = tmp / f"fuzz-{src.name}"
        if name == "npz":
            from dataclasses import replace

            vault = replace(
                Vault.load(release.paths.vault), arrays_sha256="", arrays_file=path.name
            )
            vault_path = tmp / "vault.json"

            def npz(data: bytes) -> None:
                path.write_bytes(data)
                with contextlib.suppress(EncryIPError):
                    vault.load_arrays(vault_path)

            return npz, [src.read_bytes()]
        load = {"manifest": Manifest.load, "key": LicenseeKey.load, "vault": Vault.load}[name]

        def loader(data: bytes) -> None:
            path.write_bytes(data)
            with contextlib.suppress(EncryIPError):
                load(path)

        return loader, [src.read_bytes()]

    if name == "tensor":
        from encryip_runtime.server.tensors import (
            InputSpec,
            check_input,
            decode_tensor,
            dtype_from_kserve,
            dtype_from_name,
        )

        spec = InputSpec("pixels", np.dtype("uint8"), (None, 1, 8, 8))

        def tensor(data: bytes) -> None:
            import atheris

            fdp = atheris.FuzzedDataProvider(data)
            kserve = fdp.ConsumeBool()
            dtype_name = fdp.ConsumeUnicodeNoSurrogates(8)
            shape = [
                fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
                if fdp.ConsumeBool()
                else fdp.ConsumeIntInRange(0, 9)
                for _ in range(fdp.ConsumeIntInRange(0, 9))
            ]
            raw = fdp.ConsumeBytes(fdp.remaining_bytes())
            try:
                dt = (dtype_from_kserve if kserve else dtype_from_name)(dtype_name)
                check_input(decode_tensor(dt, shape, raw), spec)
            except EncryIPError:
                pass

        return tensor, [b"\x00uint8\x00\x00\x00\x04" + bytes(64)]

    if name == "bytes_elements":
        from encryip_runtime.server.tensors import unpack_bytes_elements

        def elements(data: bytes) -> None:
            with contextlib.suppress(EncryIPError):
                unpack_bytes_elements(data)

        return elements, [b"\x03\x00\x00\x00abc"]

    if name == "npy":
        import io

        from encryip_runtime.cli.predict import _load_npy

        path = tmp / "x.npy"

        def npy(data: bytes) -> None:
            path.write_bytes(data)
            problems: list[str] = []
            arr = _load_npy(path, problems)
            assert (arr is None) == bool(problems)

        buf = io.BytesIO()
        np.save(buf, np.zeros((1, 1, 8, 8), np.uint8))
        return npy, [buf.getvalue()]
    raise SystemExit(f"unknown target {name!r}: one of {', '.join(TARGETS)}")


def run_one(name: str, seconds: float) -> None:
    """In this process: atheris owns it and exits when the time is up or on a finding."""
    import atheris

    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        with atheris.instrument_imports():
            import encryip_runtime.cli.predict
            import encryip_runtime.crypto.ristretto
            import encryip_runtime.crypto.zp
            import encryip_runtime.formats.jsonio
            import encryip_runtime.formats.manifest
            import encryip_runtime.formats.vault
            import encryip_runtime.server.tensors  # noqa: F401
        fn, seeds = build_target(name, Path(tmp))
        for i, s in enumerate(seeds):
            (corpus / f"seed{i}").write_bytes(s)
        argv = [sys.argv[0], f"-max_total_time={max(1, int(seconds))}", "-max_len=8192",
                "-rss_limit_mb=4096", str(corpus)]  # fmt: skip
        atheris.Setup(argv, fn)
        atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fuzz_atheris", description=__doc__)
    p.add_argument("--target", choices=TARGETS, action="append", help="default: all")
    p.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        run_one(args.child, args.seconds)
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    for name in args.target or TARGETS:
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.fuzz_atheris", "--child", name,
             "--seconds", str(args.seconds)],
            capture_output=True, text=True, timeout=args.seconds + 300,
        )  # fmt: skip
        tail = (proc.stdout + proc.stderr).strip().splitlines()
        runs = [ln for ln in tail if ln.startswith("Done ")]
        ok = proc.returncode == 0
        results[name] = {"ok": ok, "seconds": round(time.monotonic() - t0, 1),
                         "summary": runs[-1] if runs else ""}  # fmt: skip
        status = "ok" if ok else "FINDING"
        print(f"{name}: {status} {results[name]['summary']}", file=sys.stderr)
        if not ok:
            print("\n".join(tail[-60:]), file=sys.stderr)
    print(json.dumps({"benchmark": "fuzz_atheris", "targets": results}, sort_keys=True))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
