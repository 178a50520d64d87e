"""Profile ``secure``: the prime-order group ristretto255 (RFC 9496) via libsodium.

libsodium is loaded through ``pysodium`` (system ``libsodium23``); the hot loops
call its C functions directly through ctypes with pointer offsets into numpy
buffers, because pysodium's per-call wrappers (version checks, buffer copies)
cost more than a point addition. ctypes releases the GIL during each call, so a
background thread can precompute re-randomisers while inference runs.

SampDist, the re-randomisers, ``mul``/``div`` and large ``pow_fixed`` batches use the
native backend (``r255_native``: per-base fixed-base tables, our own C) when the group
is built with ``native=True`` (``make_scheme`` decides once: built and not disabled by
``ENCRYIP_NATIVE=0``); it gives the same bytes as libsodium.
"""

from __future__ import annotations

import ctypes
import hmac
import re
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto import r255_native
from encryip_runtime.crypto.group import Elements, Group, Scalars
from encryip_runtime.exceptions import EncodingError

__all__ = ["L", "NativeCodebook", "Ristretto255"]

#: Order of ristretto255.
L = 2**252 + 27742317777372353535851937790883648493

_BYTES = 32
_HEX = re.compile(r"[0-9a-fA-F]*")


def _canonical_hex(text: str, is_: str, must: str) -> bytes:
    """The 32 bytes of ``text`` if it is their canonical JSON form: 64 lowercase hex
    digits, nothing else (``bytes.fromhex`` alone also takes spaces and upper case)."""
    if not _HEX.fullmatch(text) or len(text) % 2:
        raise EncodingError(f"{is_} not valid hex")
    if len(text) != 2 * _BYTES:
        raise EncodingError(f"{must} {_BYTES} bytes, got {len(text) // 2}")
    if text != text.lower():
        raise EncodingError(f"{is_} not lowercase hex (the only canonical form)")
    return bytes.fromhex(text)


#: ``pow_fixed`` builds (or reuses) a native table from this many scalars on: a table
#: costs about as much as a dozen libsodium scalar multiplications.
_NATIVE_POW_FIXED_MIN = 16


def _load_sodium() -> ctypes.CDLL:
    try:
        import pysodium
    except (ImportError, OSError, ValueError) as exc:  # pragma: no cover - install problem
        raise ImportError(
            "the secure profile needs libsodium >= 1.0.18 and pysodium: "
            "apt-get install libsodium23 && pip install pysodium"
        ) from exc
    lib: ctypes.CDLL = pysodium.sodium
    if lib.sodium_init() < 0:  # pragma: no cover
        raise ImportError("sodium_init() failed")
    for fn in (
        "crypto_scalarmult_ristretto255",
        "crypto_scalarmult_ristretto255_base",
        "crypto_core_ristretto255_add",
        "crypto_core_ristretto255_sub",
        "crypto_core_ristretto255_is_valid_point",
        "crypto_core_ristretto255_random",
    ):
        if not hasattr(lib, fn):  # pragma: no cover
            raise ImportError(f"libsodium lacks {fn}: version 1.0.18 or newer is required")
    return lib


_lib = _load_sodium()
_smult = _lib.crypto_scalarmult_ristretto255
_smult_base = _lib.crypto_scalarmult_ristretto255_base
_add = _lib.crypto_core_ristretto255_add
_sub = _lib.crypto_core_ristretto255_sub
_valid = _lib.crypto_core_ristretto255_is_valid_point
_rand_point = _lib.crypto_core_ristretto255_random
for _f in (_smult, _add, _sub):
    _f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    _f.restype = ctypes.c_int
_smult_base.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_smult_base.restype = ctypes.c_int
_valid.argtypes = [ctypes.c_void_p]
_valid.restype = ctypes.c_int
_rand_point.argtypes = [ctypes.c_void_p]
_rand_point.restype = None

_BASE = np.frombuffer(
    bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76"),
    dtype=np.uint8,
).reshape(1, _BYTES)


def _ptr(a: npt.NDArray[np.uint8]) -> int:
    return int(a.ctypes.data)


def _scalar_bytes(k: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer((k % L).to_bytes(_BYTES, "little"), dtype=np.uint8).copy()


def _rows(x: Elements) -> npt.NDArray[np.uint8]:
    a = np.ascontiguousarray(x, dtype=np.uint8)
    if a.ndim != 2 or a.shape[1] != _BYTES:
        raise EncodingError(f"expected uint8 (N, {_BYTES}) ristretto255 elements, got {a.shape}")
    return a


def _table(base: npt.NDArray[np.uint8]) -> r255_native.FixedBase:
    """The cached native table of a base given as a batch of one."""
    return r255_native.table_for(base[0].tobytes())


def _is_base(b: npt.NDArray[np.uint8]) -> bool:
    return bool(np.array_equal(b[0], _BASE[0]))


def _check_points(a: npt.NDArray[np.uint8], what: str) -> None:
    """Raise for a row that is not a canonical encoding (the identity, all zeros, is one).

    libsodium's scalarmult fails alike for an invalid point and an identity result; the
    fallback must not map an invalid point to the identity (the native path raises)."""
    base = _ptr(a)
    for i in range(len(a)):
        if (a[i, _BYTES - 1] & 0x80 or _valid(base + i * _BYTES) != 1) and a[i].any():
            raise EncodingError(f"{what} {i}: not a valid ristretto255 encoding")


def _pow_fixed_sodium(b: npt.NDArray[np.uint8], ka: npt.NDArray[np.uint8]) -> Elements:
    """libsodium: ``b^k`` per scalar row (its fixed-base table when b is the base point)."""
    _check_points(b, "base")
    out = np.empty((len(ka), _BYTES), dtype=np.uint8)
    po, pk, pb = _ptr(out), _ptr(ka), _ptr(b)
    base = _is_base(b)
    for i in range(len(ka)):
        off = i * _BYTES
        rc = _smult_base(po + off, pk + off) if base else _smult(po + off, pk + off, pb)
        if rc != 0:
            out[i] = 0  # the result is the identity (k = 0 mod L, or b = identity)
    return out


def _multiples_sodium(
    bases: Sequence[npt.NDArray[np.uint8]], ka: npt.NDArray[np.uint8]
) -> list[Elements]:
    """libsodium: ``base^r`` for each base and scalar row."""
    return [_pow_fixed_sodium(b, ka) for b in bases]


def _rerandomizers_sodium(
    g1: npt.NDArray[np.uint8],
    g2: npt.NDArray[np.uint8],
    h: npt.NDArray[np.uint8],
    ka: npt.NDArray[np.uint8],
) -> tuple[Elements, Elements, Elements]:
    """libsodium: ``(g1^r, g2^r, h^r)`` for each scalar row."""
    r1, r2, r3 = _multiples_sodium([g1, g2, h], ka)
    return r1, r2, r3


#: (L + 1) / 2, the inverse of 2 mod L: ``c^HALF`` is the element whose square is c.
_HALF = (L + 1) // 2


class NativeCodebook:
    """A codebook prepared for the native SampDist: the decoded halves of its entries."""

    __slots__ = ("codebook", "components", "halves", "tables")

    def __init__(self, codebook: npt.NDArray[np.uint8], halves: r255_native.Points):
        self.codebook = codebook
        self.components = codebook.shape[1]
        self.halves = halves
        # The last bases' encodings and their tables (a model serves one public key).
        self.tables: tuple[bytes, r255_native.TableSet] | None = None

    def __len__(self) -> int:
        return len(self.codebook)


class Ristretto255(Group):
    """ristretto255; elements are canonical 32-byte encodings, scalars mod L.

    ``native``: use the native backend (``r255_native``) for the batch operations;
    ``None`` means whenever it is built. Fixed for the life of the group.
    """

    name = "ristretto255"
    order = L
    element_size = _BYTES

    def __init__(self, native: bool | None = None) -> None:
        built = r255_native.available()
        if native and not built:
            raise RuntimeError(
                f"native ristretto255 backend requested but {r255_native.why_unavailable()}"
            )
        self._native = built if native is None else bool(native)
        self.backend = "native" if self._native else "libsodium"

    # -- elements -------------------------------------------------------------
    def generator(self) -> Elements:
        return _BASE.copy()

    def identity(self, count: int) -> Elements:
        return np.zeros((count, _BYTES), dtype=np.uint8)

    def random_elements(self, count: int) -> Elements:
        out = np.empty((count, _BYTES), dtype=np.uint8)
        base = _ptr(out)
        for i in range(count):
            _rand_point(base + i * _BYTES)
        return out

    def _binary(self, fn: Any, x: Elements, y: Elements) -> Elements:
        xa, ya = _rows(x), _rows(y)
        n = max(len(xa), len(ya))
        if len(xa) not in (1, n) or len(ya) not in (1, n):
            raise ValueError(f"cannot broadcast batches of {len(xa)} and {len(ya)} elements")
        out = np.empty((n, _BYTES), dtype=np.uint8)
        po, px, py = _ptr(out), _ptr(xa), _ptr(ya)
        sx = _BYTES if len(xa) == n else 0
        sy = _BYTES if len(ya) == n else 0
        for i in range(n):
            if fn(po + i * _BYTES, px + i * sx, py + i * sy) != 0:  # pragma: no cover
                raise EncodingError(f"element {i}: not a valid ristretto255 encoding")
        return out

    def mul(self, x: Elements, y: Elements) -> Elements:
        if self._native:
            return r255_native.add(_rows(x), _rows(y))
        return self._binary(_add, x, y)

    def div(self, x: Elements, y: Elements) -> Elements:
        if self._native:
            return r255_native.add(_rows(x), _rows(y), subtract=True)
        return self._binary(_sub, x, y)

    def pow(self, x: Elements, k: int) -> Elements:
        xa = _rows(x)
        _check_points(xa, "element")
        kb = _scalar_bytes(k)
        out = np.empty_like(xa)
        po, px, pk = _ptr(out), _ptr(xa), _ptr(kb)
        for i in range(len(xa)):
            if _smult(po + i * _BYTES, pk, px + i * _BYTES) != 0:
                out[i] = 0  # the result is the identity (k = 0 mod L, or x = identity)
        return out

    def pow_fixed(self, base: Elements, ks: Scalars) -> Elements:
        b = _rows(base)
        ka = _rows(ks)
        if len(ka) >= _NATIVE_POW_FIXED_MIN and self._native:
            return r255_native.scalarmult(_table(b), ka)
        return _pow_fixed_sodium(b, ka)

    def multiples(self, bases: Sequence[Elements], ks: Scalars) -> list[Elements]:
        """``base^r`` for each base and scalar: native, one recoding of r for all bases."""
        ka = _rows(ks)
        bs = [_rows(b) for b in bases]
        if self._native:
            rows = r255_native.fixed_rows([_table(b) for b in bs], ka)
            return [np.ascontiguousarray(rows[:, k]) for k in range(len(bs))]
        return _multiples_sodium(bs, ka)

    def _scalars_for(self, n: int, scalars: Scalars | None) -> npt.NDArray[np.uint8]:
        ka = self.random_scalars(n) if scalars is None else _rows(scalars)
        if len(ka) != n:
            raise ValueError(f"{len(ka)} scalars for {n} ciphertexts")
        return ka

    def sampdist_rows(
        self, bases: Sequence[Elements], cts: Elements, scalars: Scalars | None = None
    ) -> Elements:
        """SampDist of a ``uint8 (N, nb, 32)`` batch: ``base_k^r u_k`` per row.

        One fresh r per row from :meth:`random_scalars` unless ``scalars`` is given
        (tests). Native: one C call for the batch; else the libsodium loops.
        """
        nb = len(bases)
        c = np.ascontiguousarray(cts, dtype=np.uint8)
        if c.ndim != 3 or c.shape[1:] != (nb, _BYTES):
            raise EncodingError(f"expected uint8 (N, {nb}, {_BYTES}) ciphertexts, got {c.shape}")
        n = len(c)
        ka = self._scalars_for(n, scalars)
        bs = [_rows(b) for b in bases]
        if self._native:
            tables = [_table(b) for b in bs]
            return r255_native.sampdist_n(tables, c.reshape(n, nb * _BYTES), ka).reshape(c.shape)
        rs = _multiples_sodium(bs, ka)
        out = np.empty_like(c)
        for k, r in enumerate(rs):
            out[:, k] = self._binary(_add, r, c[:, k])
        return out

    def dec_rows(self, cts: Elements, a: int, b: int) -> Elements:
        """Native: one C call, constant time in (a, b) (the mask ``u1^a u2^b`` is only
        added, never encoded); libsodium: its scalar multiplications, then add/sub."""
        if not self._native:
            return super().dec_rows(cts, a, b)
        c = np.ascontiguousarray(cts, dtype=np.uint8)
        if c.ndim != 3 or c.shape[1:] != (3, _BYTES):
            raise EncodingError(f"expected uint8 (N, 3, {_BYTES}) ciphertexts, got {c.shape}")
        ka, kb = (a % L).to_bytes(_BYTES, "little"), (b % L).to_bytes(_BYTES, "little")
        return r255_native.dec(c.reshape(len(c), 3 * _BYTES), ka, kb)

    def prepare_codebook(self, codebook: Elements) -> Any:
        """Native: the decoded halves ``c^((L+1)/2)`` of every component, so that SampDist
        of an entry needs neither a decode nor a square root (``sampdist_codebook``)."""
        cb = np.ascontiguousarray(codebook, dtype=np.uint8)
        if cb.ndim != 3 or cb.shape[2] != _BYTES:
            raise EncodingError(f"expected uint8 (S, nb, {_BYTES}) codebook, got {cb.shape}")
        if not self._native:
            return cb
        flat = self.from_bytes(cb.reshape(-1, _BYTES))
        return NativeCodebook(cb, r255_native.Points(self.pow(flat, _HALF)))

    def sampdist_codebook(
        self,
        bases: Sequence[Elements],
        prepared: Any,
        slots: npt.NDArray[np.integer],
        scalars: Scalars | None = None,
        last_scalars: Scalars | None = None,
    ) -> Elements:
        """``last_scalars``: the last base takes these (format 2's ``r + K m``), in the
        same native call; only for a native codebook."""
        if not isinstance(prepared, NativeCodebook):
            if last_scalars is not None:
                raise ValueError("last_scalars needs a codebook prepared by the native backend")
            return super().sampdist_codebook(bases, prepared, slots, scalars)
        nb = len(bases)
        if prepared.components != nb:
            raise ValueError(f"codebook has {prepared.components} components, {nb} bases given")
        sl = np.asarray(slots)
        ka = self._scalars_for(len(sl), scalars)
        key = b"".join(_rows(b)[0].tobytes() for b in bases)
        cached = prepared.tables
        if cached is None or cached[0] != key:  # a racing rebuild is harmless
            cached = key, r255_native.TableSet([_table(_rows(b)) for b in bases])
            prepared.tables = cached
        out = r255_native.sampdist_slots(cached[1], prepared.halves, sl, ka, last_scalars)
        return out.reshape(len(sl), nb, _BYTES)

    def equal(self, x: Elements, y: Elements) -> bool:
        return hmac.compare_digest(_rows(x).tobytes(), _rows(y).tobytes())

    # -- scalars --------------------------------------------------------------
    def random_scalar(self) -> int:
        return int.from_bytes(self.random_scalars(1)[0].tobytes(), "little")

    def random_scalars(self, count: int) -> Scalars:
        """``count`` uniform scalars mod L: 64 bytes from ``secrets`` each, reduced (bias
        < 2^-250, as RFC 9496's hash-to-scalar). One call for the batch and no GIL release
        per row: a thread re-acquiring the GIL once per row queued behind the event loop."""
        raw = secrets.token_bytes(2 * _BYTES * count)
        if self._native and r255_native.has_scalar_draws():
            return r255_native.scalars_wide(raw)  # the same reduction in C, GIL released
        w = 2 * _BYTES
        packed = b"".join(
            (int.from_bytes(raw[i : i + w], "little") % L).to_bytes(_BYTES, "little")
            for i in range(0, len(raw), w)
        )
        return np.frombuffer(packed, dtype=np.uint8).reshape(count, _BYTES).copy()

    def scalars_from_ints(self, values: list[int]) -> Scalars:
        out = np.empty((len(values), _BYTES), dtype=np.uint8)
        for i, v in enumerate(values):
            out[i] = _scalar_bytes(v)
        return out

    def scalar_to_json(self, k: int) -> Any:
        return (k % L).to_bytes(_BYTES, "little").hex()

    def scalar_from_json(self, value: Any) -> int:
        if not isinstance(value, str):
            raise EncodingError(f"scalar must be a hex string, got {type(value).__name__}")
        raw = _canonical_hex(value, "scalar is", "scalar must be")
        k = int.from_bytes(raw, "little")
        if k >= L:
            raise EncodingError("scalar is not reduced mod L (non-canonical encoding)")
        return k

    # -- encodings ------------------------------------------------------------
    def to_bytes(self, x: Elements) -> npt.NDArray[np.uint8]:
        return _rows(x)

    def from_bytes(self, data: npt.NDArray[np.uint8]) -> Elements:
        a = np.asarray(data)
        if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != _BYTES:
            raise EncodingError(
                f"expected {_BYTES}-byte ristretto255 encodings as uint8 (N, {_BYTES}), "
                f"got {a.dtype} {a.shape}"
            )
        a = np.ascontiguousarray(a)
        # RFC 9496 §4.3.1: the 32 bytes as a little-endian integer must be < p, so the
        # top bit is always clear. libsodium 1.0.18's is_valid_point ignores that bit,
        # which would give every element a second encoding; reject it here.
        high = np.flatnonzero(a[:, _BYTES - 1] & 0x80)
        if high.size:
            raise EncodingError(
                f"element {int(high[0])}: not a canonical ristretto255 encoding (top bit set)"
            )
        base = _ptr(a)
        for i in range(len(a)):
            if _valid(base + i * _BYTES) != 1 and a[i].any():
                raise EncodingError(f"element {i}: not a canonical ristretto255 encoding")
        return a.copy()

    def to_json(self, x: Elements) -> list[Any]:
        return [bytes(row).hex() for row in _rows(x)]

    def from_json(self, values: list[Any]) -> Elements:
        if not isinstance(values, list):
            raise EncodingError("expected a list of hex strings")
        rows = np.empty((len(values), _BYTES), dtype=np.uint8)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise EncodingError(f"element {i}: expected a hex string, got {type(v).__name__}")
            raw = _canonical_hex(v, f"element {i}:", f"element {i}: expected")
            rows[i] = np.frombuffer(raw, dtype=np.uint8)
        return self.from_bytes(rows)
