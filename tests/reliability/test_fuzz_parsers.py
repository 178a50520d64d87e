"""Property fuzzing of every parser of outside bytes that needs no server.

Wire ciphertexts, element/scalar JSON, the manifest/key/vault loaders (valid files mutated:
JSON edits, type swaps, truncation, byte flips), the vault's ``.npz`` and request tensors.
Whatever the input, the outcome is a value or a typed error (``EncryIPError``) — never
another exception type. Accepted encodings are canonical (they re-encode to the same bytes).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encryip_runtime.crypto.profiles import make_scheme
from encryip_runtime.crypto.scheme import CSLite
from encryip_runtime.exceptions import EncodingError, EncryIPError, FormatError, InputError
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.formats.vault import Vault, VaultArrays
from encryip_runtime.formats.vault_crypt import ARRAYS_ROLE, VAULT_ROLE, read_vault_bytes
from encryip_runtime.server.tensors import (
    KSERVE_DATATYPES,
    InputSpec,
    check_input,
    decode_tensor,
    dtype_from_kserve,
    dtype_from_name,
    unpack_bytes_elements,
)

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SCHEMES: dict[str, CSLite] = {p: make_scheme(p, 10) for p in ("paper", "secure")}

# Any JSON value, small.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80)
    | st.sampled_from(["", "00" * 32, "ff" * 32, "e" * 64, "0x1", "-1", "1e309"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


# -- wire ciphertexts ----------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["paper", "secure"])
@FUZZ
@given(data=st.data())
def test_from_wire_bytes(profile: str, data: st.DataObject) -> None:
    scheme = SCHEMES[profile]
    w = scheme.ciphertext_size
    rows = data.draw(st.integers(0, 4))
    raw = data.draw(
        st.one_of(
            st.binary(min_size=rows * w, max_size=rows * w),  # right length, random content
            st.binary(max_size=5 * w),  # any length
        )
    )
    try:
        cts = scheme.from_wire(raw)
    except EncodingError:
        return
    assert len(raw) % w == 0
    # Accepted means canonical: the wire form is the bytes we were given.
    assert scheme.to_wire(cts).tobytes() == raw


@pytest.mark.parametrize("profile", ["paper", "secure"])
@FUZZ
@given(data=st.data())
def test_from_wire_valid_then_flipped(profile: str, data: st.DataObject) -> None:
    """Valid ciphertexts with one byte changed: accepted only if still canonical."""
    scheme = SCHEMES[profile]
    n = data.draw(st.integers(1, 3))
    family = scheme.gen(1)
    cts = scheme.fake(family.pk, n)
    wire = bytearray(scheme.to_wire(cts).tobytes())
    pos = data.draw(st.integers(0, len(wire) - 1))
    wire[pos] ^= data.draw(st.integers(1, 255))
    try:
        again = scheme.from_wire(bytes(wire))
    except EncodingError as exc:
        assert "component u" in str(exc)
        return
    assert scheme.to_wire(again).tobytes() == bytes(wire)


@pytest.mark.parametrize("profile", ["paper", "secure"])
@FUZZ
@given(
    items=st.lists(
        st.one_of(st.binary(max_size=100), st.integers(), st.text(max_size=4), st.none()),
        max_size=4,
    )
)
def test_from_wire_lists_and_arrays(profile: str, items: list[Any]) -> None:
    scheme = SCHEMES[profile]
    with contextlib.suppress(EncodingError):
        scheme.from_wire(items)
    shape = (len(items), scheme.ciphertext_size + len(items) % 2)
    for dtype in (np.uint8, np.int64, np.float32):
        with contextlib.suppress(EncodingError):
            scheme.from_wire(np.zeros(shape, dtype=dtype))


# -- element and scalar JSON ---------------------------------------------------------------


@pytest.mark.parametrize("profile", ["paper", "secure"])
@FUZZ
@given(values=json_values)
def test_element_and_scalar_json(profile: str, values: Any) -> None:
    g = SCHEMES[profile].group
    try:
        elements = g.from_json(values)
    except EncodingError:
        pass
    else:
        assert isinstance(values, list) and len(elements) == len(values)
        assert len(g.to_bytes(elements)) == len(values)
    for candidate in (values, *(values if isinstance(values, list) else [])):
        try:
            k = g.scalar_from_json(candidate)
        except EncodingError:
            continue
        assert 0 <= k < g.order


@FUZZ
@given(text=st.text(alphabet="0123456789abcdefABCDEF \t\n-x", max_size=70))
def test_secure_hex_forms(text: str) -> None:
    g = SCHEMES["secure"].group
    for parse in (lambda v: g.from_json([v]), g.scalar_from_json):
        with contextlib.suppress(EncodingError):
            parse(text)


# -- release files: mutate valid ones ------------------------------------------------------


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:6]):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        doc = doc[k]
    return doc


@st.composite
def mutated_documents(draw: st.DrawFn, original: bytes) -> bytes:
    """A valid JSON file after 1-3 random edits, or its text truncated / bytes flipped."""
    kind = draw(st.sampled_from(["edit", "edit", "edit", "truncate", "flip", "splice"]))
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    if kind == "flip":
        raw = bytearray(original)
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    if kind == "splice":
        pos = draw(st.integers(0, len(original)))
        return original[:pos] + draw(st.binary(max_size=20)) + original[pos:]
    doc = json.loads(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "swap", "grow", "shrink"]))
        if not path:
            if op == "replace":
                doc = draw(json_values)
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        old = parent[key]
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "delete":
            del parent[key]
        elif op == "swap":  # same content, another type
            swapped: Any = (
                str(old) if not isinstance(old, str) else
                (int(old) if old.isdigit() else [old])
            )  # fmt: skip
            parent[key] = swapped
        elif op == "grow" and isinstance(old, list):
            parent[key] = [*old, *old[:1]] if old else [draw(json_values)]
        elif op == "shrink" and isinstance(old, (list, str)):
            parent[key] = old[: len(old) // 2]
        elif isinstance(old, int) and not isinstance(old, bool):
            parent[key] = old + draw(st.sampled_from([-1, 1, 2**64, -(2**64)]))
    return json.dumps(doc).encode()


def _check_loader(load: Any, path: Path, original: bytes, data: st.DataObject) -> None:
    path.write_bytes(data.draw(mutated_documents(original)))
    # FormatError / InvalidKeyError / EncodingError: typed, naming the problem.
    with contextlib.suppress(EncryIPError):
        load(path)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


@FUZZ
@given(data=st.data())
def test_manifest_loader(tiny_release: Any, fuzz_dir: Path, data: st.DataObject) -> None:
    original = (tiny_release.licensee_dir("acme") / "manifest.json").read_bytes()
    _check_loader(Manifest.load, fuzz_dir / f"manifest-{tiny_release.profile}.json", original, data)


@FUZZ
@given(data=st.data())
def test_key_loader(tiny_release: Any, fuzz_dir: Path, data: st.DataObject) -> None:
    original = tiny_release.key("acme").read_bytes()
    _check_loader(LicenseeKey.load, fuzz_dir / f"{tiny_release.profile}.key", original, data)


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_vault_loader(tiny_release: Any, fuzz_dir: Path, data: st.DataObject) -> None:
    # The plaintext document: the JSON parser is what is fuzzed (plaintext vaults still read).
    original = read_vault_bytes(tiny_release.paths.vault, VAULT_ROLE)
    _check_loader(Vault.load, fuzz_dir / f"vault-{tiny_release.profile}.json", original, data)


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_vault_arrays(secure_release: Any, fuzz_dir: Path, data: st.DataObject) -> None:
    """vault.npz truncated, flipped or spliced: FormatError, never zlib/zip/numpy errors."""
    vault_path = secure_release.paths.vault
    vault = Vault.load(vault_path)
    d = fuzz_dir / "npz"
    d.mkdir(exist_ok=True)
    shutil.copy(vault_path, d / vault_path.name)
    original = read_vault_bytes(vault_path.parent / vault.arrays_file, ARRAYS_ROLE)
    kind = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    if kind == "truncate":
        raw = original[: data.draw(st.integers(0, len(original) - 1))]
    elif kind == "flip":
        buf = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8))):
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
        raw = bytes(buf)
    else:
        pos = data.draw(st.integers(0, len(original)))
        raw = original[:pos] + data.draw(st.binary(min_size=1, max_size=40)) + original[pos:]
    (d / vault.arrays_file).write_bytes(raw)
    # Without the digest check (a vault whose arrays.sha256 is empty): the parser itself.
    from dataclasses import replace

    for v in (vault, replace(vault, arrays_sha256="")):
        try:
            arrays = v.load_arrays(d / vault_path.name)
        except FormatError:
            continue
        assert isinstance(arrays, VaultArrays)


# -- request tensors (pure functions both servicers use) -----------------------------------

SPEC = InputSpec("pixels", "uint8", (1, 8, 8))
DTYPE_NAMES = [*KSERVE_DATATYPES.values(), "complex64", "object", "V8", "<u1", "str", ""]


@settings(FUZZ, max_examples=300)
@given(
    dtype=st.sampled_from(DTYPE_NAMES) | st.text(max_size=10),
    kserve=st.sampled_from([*KSERVE_DATATYPES, "BYTES", "fp32", ""]) | st.text(max_size=6),
    shape=st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-2, 70), max_size=10),
    data=st.data(),
)
def test_request_tensors(dtype: str, kserve: str, shape: list[int], data: st.DataObject) -> None:
    for parse_dtype, name in ((dtype_from_name, dtype), (dtype_from_kserve, kserve)):
        try:
            dt = parse_dtype(name)
        except InputError:
            continue
        count = math.prod(shape) if shape and all(d >= 0 for d in shape) else -1
        size = count * dt.itemsize
        raw = data.draw(
            st.binary(min_size=size, max_size=size) if 0 <= size <= 4096 else st.binary(max_size=64)
        )
        try:
            x = decode_tensor(dt, shape, raw)
        except InputError:
            continue
        assert x.shape == tuple(shape) and x.nbytes == len(raw)
        try:
            check_input(x, SPEC)
        except InputError:
            continue
        assert x.dtype == np.uint8 and x.shape[1:] == (1, 8, 8) and len(x) >= 1


@pytest.mark.parametrize("shape", [[8, 2**60, 0], [2, 0, 2**62, 2**62], [1, 2**40, 2**40, 0]])
def test_zero_elements_with_huge_dims(shape: list[int]) -> None:
    """Found by test_request_tensors: 0 elements (so 0 bytes match) in a shape numpy cannot
    make (its dimensions overflow int64)."""
    with pytest.raises(InputError):
        decode_tensor(np.dtype("uint8"), shape, b"")


@FUZZ
@given(raw=st.binary(max_size=200))
def test_bytes_elements(raw: bytes) -> None:
    try:
        items = unpack_bytes_elements(raw)
    except InputError:
        return
    assert sum(4 + len(i) for i in items) == len(raw)
