"""Native ristretto255 backend: per-base fixed-base tables for SampDist (``_r255.c``).

The C file is our own code (docs/security.md, "Native ristretto255 backend"). It is
built by setuptools as the extension ``encryip_runtime.crypto._r255`` (an empty
CPython module) and loaded here with ``ctypes.CDLL``, so each call releases the
GIL like the libsodium calls in ``ristretto.py``. When it is not built (no
compiler at install time) :func:`available` is false, and ``make_scheme`` also
leaves it out when ``ENCRYIP_NATIVE=0`` is set; ``Ristretto255`` then uses
libsodium. Both give the same bytes.

Everything here takes and returns numpy ``uint8`` arrays of canonical encodings
and 32-byte little-endian scalars; callers reduce scalars mod L.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from encryip_runtime.exceptions import EncodingError

__all__ = [
    "ENV_VAR",
    "SIMD_ENV_VAR",
    "FixedBase",
    "Points",
    "TableSet",
    "add",
    "available",
    "dec",
    "disabled_by_env",
    "fixed_rows",
    "has_progression",
    "has_scalar_draws",
    "has_small_msm",
    "has_split_slots",
    "is_valid",
    "progression",
    "rerandomizers",
    "sampdist",
    "sampdist_n",
    "sampdist_slots",
    "scalarmult",
    "scalars_wide",
    "shift_scalars",
    "simd",
    "small_msm",
    "table_for",
    "why_unavailable",
]

log = logging.getLogger(__name__)

#: ``ENCRYIP_NATIVE=0`` (or false/no/off) forces the libsodium path. Read once per scheme,
#: by ``make_scheme`` (``disabled_by_env``); a group built directly picks its backend
#: with its ``native`` argument.
ENV_VAR = "ENCRYIP_NATIVE"
#: ``ENCRYIP_SIMD=0`` keeps the native backend on its portable code (no AVX2 lanes).
SIMD_ENV_VAR = "ENCRYIP_SIMD"
_MODULE = "encryip_runtime.crypto._r255"
_ABI_VERSION = 2  # must match EIP_ABI_VERSION in _r255.c
_MAX_BASES = 64  # EIP_MAX_BASES in _r255.c
_CACHE_SIZE = 16  # tables of ~60 KiB: the server needs three (g1, g2, h)

_P = ctypes.c_void_p
_N = ctypes.c_size_t

_load_lock = threading.Lock()
_loaded = False
_lib: ctypes.CDLL | None = None
_why_not = "not loaded yet"
_table_bytes = 0
_logged: bool | None = None

_cache: OrderedDict[bytes, FixedBase] = OrderedDict()
_cache_lock = threading.Lock()


def _declare(lib: ctypes.CDLL) -> None:
    """argtypes/restype of every exported function (ctypes would guess ``int``)."""
    lib.eip_abi_version.argtypes = []
    lib.eip_abi_version.restype = ctypes.c_int
    lib.eip_table_bytes.argtypes = []
    lib.eip_table_bytes.restype = ctypes.c_size_t
    lib.eip_table_init.argtypes = [_P, _P]
    lib.eip_table_init.restype = ctypes.c_int
    lib.eip_scalarmult_fixed.argtypes = [_P, _P, _N, _P]
    lib.eip_scalarmult_fixed.restype = ctypes.c_int
    lib.eip_rerandomizers.argtypes = [_P, _P, _P, _P, _N, _P, _P, _P]
    lib.eip_rerandomizers.restype = ctypes.c_int
    lib.eip_sampdist.argtypes = [_P, _P, _P, _P, _P, _N, _P]
    lib.eip_sampdist.restype = ctypes.c_long
    lib.eip_add_batch.argtypes = [_P, _N, _P, _N, _N, ctypes.c_int, _P]
    lib.eip_add_batch.restype = ctypes.c_long
    lib.eip_is_valid.argtypes = [_P]
    lib.eip_is_valid.restype = ctypes.c_int
    lib.eip_points_bytes.argtypes = [_N]
    lib.eip_points_bytes.restype = ctypes.c_size_t
    lib.eip_points_init.argtypes = [_P, _P, _N]
    lib.eip_points_init.restype = ctypes.c_long
    lib.eip_fixed_rows.argtypes = [_P, _N, _P, _N, _P]
    lib.eip_fixed_rows.restype = ctypes.c_int
    lib.eip_sampdist_slots.argtypes = [_P, _N, _P, _P, _P, _N, _P]
    lib.eip_sampdist_slots.restype = ctypes.c_long
    lib.eip_sampdist_n.argtypes = [_P, _N, _P, _P, _N, _P]
    lib.eip_sampdist_n.restype = ctypes.c_long
    lib.eip_dec.argtypes = [_P, _P, _P, _N, _P]
    lib.eip_dec.restype = ctypes.c_long
    if hasattr(lib, "eip_progression"):  # secure format v2 label tables (newer builds)
        lib.eip_progression.argtypes = [_P, _P, _N, _P]
        lib.eip_progression.restype = ctypes.c_long
    if hasattr(lib, "eip_sampdist_slots2"):  # format 2 in one call (newer builds)
        lib.eip_sampdist_slots2.argtypes = [_P, _N, _N, _P, _P, _P, _P, _N, _P]
        lib.eip_sampdist_slots2.restype = ctypes.c_long
    if hasattr(lib, "eip_scalars_wide"):  # scalar draws off the GIL (newer builds)
        lib.eip_scalars_wide.argtypes = [_P, _N, _P]
        lib.eip_scalars_wide.restype = ctypes.c_long
        lib.eip_shift_scalars.argtypes = [_P, _N, ctypes.c_uint64, ctypes.c_uint64, _P]
        lib.eip_shift_scalars.restype = ctypes.c_long
    if hasattr(lib, "eip_simd"):  # the AVX2 lanes (newer builds)
        lib.eip_simd.argtypes = [ctypes.c_int]
        lib.eip_simd.restype = ctypes.c_int
    if hasattr(lib, "eip_small_msm"):  # secure format v2 decryption (newer builds)
        lib.eip_small_msm.argtypes = [_P, _N, _P, ctypes.c_int, _N, _P]
        lib.eip_small_msm.restype = ctypes.c_long


def _load() -> ctypes.CDLL | None:
    """The library, loaded once; ``None`` (with the reason in ``_why_not``) if absent."""
    global _loaded, _lib, _why_not, _table_bytes
    if _loaded:
        return _lib
    with _load_lock:
        if _loaded:
            return _lib
        try:
            spec = importlib.util.find_spec(_MODULE)
            if spec is None or not spec.origin or not os.path.isfile(spec.origin):
                _why_not = f"{_MODULE} is not built (no C compiler at install time?)"
            else:
                lib = ctypes.CDLL(spec.origin)
                version = int(lib.eip_abi_version())
                if version != _ABI_VERSION:
                    # A stale in-tree build (editable install): rebuild with pip install -e.
                    _why_not = f"{spec.origin} has ABI {version}, expected {_ABI_VERSION}"
                else:
                    _declare(lib)
                    _table_bytes = int(lib.eip_table_bytes())
                    if hasattr(lib, "eip_simd") and _off(os.environ.get(SIMD_ENV_VAR, "")):
                        lib.eip_simd(0)
                    _lib = lib
        except (ImportError, OSError, AttributeError) as exc:
            _why_not = f"cannot load {_MODULE}: {exc}"
        _loaded = True
    return _lib


def _off(value: str) -> bool:
    return value.strip().lower() in ("0", "false", "no", "off")


def disabled_by_env() -> bool:
    """Whether ``ENCRYIP_NATIVE`` asks for the libsodium path (0, false, no, off)."""
    return _off(os.environ.get(ENV_VAR, ""))


def simd(enable: bool | None = None) -> str:
    """The vector code the fixed-base rows run on: ``"avx2"`` (four rows at once, x86-64
    CPUs and OSes with AVX2) or ``"portable"``; ``enable`` switches it first (``True``
    takes AVX2 only where supported). Both give the same bytes. ``ENCRYIP_SIMD=0`` at
    load time starts on the portable code. Process-wide: meant for tests and benchmarks,
    not to be flipped under running calls."""
    lib = _require()
    if not hasattr(lib, "eip_simd"):
        return "portable"
    level = int(lib.eip_simd(-1 if enable is None else int(enable)))
    return "avx2" if level == 1 else "portable"


def available() -> bool:
    """Whether the native backend is built and loadable (``ENCRYIP_NATIVE`` aside)."""
    global _logged
    ok = _load() is not None
    if ok != _logged:  # log once
        _logged = ok
        if ok:
            log.debug("ristretto255 native backend loaded (%s)", _MODULE)
        else:
            log.debug("ristretto255 native backend unavailable: %s", _why_not)
    return ok


def why_unavailable() -> str:
    """Why ``available()`` is false ("" when it is true)."""
    return "" if _load() is not None else _why_not


def _require() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise RuntimeError(f"native ristretto255 backend unavailable: {_why_not}")
    return lib


def _ptr(a: npt.NDArray[np.generic]) -> int:
    return int(a.ctypes.data)


def _rows(x: npt.NDArray[np.uint8], width: int, what: str) -> npt.NDArray[np.uint8]:
    a = np.ascontiguousarray(x, dtype=np.uint8)
    if a.ndim != 2 or a.shape[1] != width:
        raise EncodingError(f"expected uint8 (N, {width}) {what}, got {a.shape}")
    return a


class FixedBase:
    """The precomputed table (64 windows x 8 multiples) of one public point.

    Immutable once built and only read by the C code, so one instance may be used
    by many threads at once. Build it through :func:`table_for` (cached).
    """

    __slots__ = ("_addr", "_buf", "encoding")

    def __init__(self, encoding: bytes) -> None:
        lib = _require()
        if len(encoding) != 32:
            raise EncodingError(f"expected a 32-byte ristretto255 encoding, got {len(encoding)}")
        self.encoding = bytes(encoding)
        # uint64 storage: the C side reads 64-bit limbs, so 8-byte alignment is needed.
        self._buf = np.zeros((_table_bytes + 7) // 8, dtype=np.uint64)
        enc = np.frombuffer(self.encoding, dtype=np.uint8)
        self._addr = _ptr(self._buf)  # read per SampDist call: worth keeping
        if lib.eip_table_init(self._addr, _ptr(enc)) != 0:
            raise EncodingError("base point: not a canonical ristretto255 encoding")

    @property
    def address(self) -> int:
        """Address of the table for the C functions (valid while ``self`` lives)."""
        return self._addr


def table_for(encoding: bytes) -> FixedBase:
    """The cached table for a base encoding (LRU of a few tables, thread-safe)."""
    key = bytes(encoding)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    table = FixedBase(key)  # ~0.3 ms, outside the lock; a racing duplicate is harmless
    with _cache_lock:
        _cache[key] = table
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return table


def scalarmult(base: FixedBase, scalars: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``encode(k * base)`` for each 32-byte scalar row."""
    lib = _require()
    ks = _rows(scalars, 32, "scalars")
    out = np.empty((len(ks), 32), dtype=np.uint8)
    if lib.eip_scalarmult_fixed(base.address, _ptr(ks), len(ks), _ptr(out)) != 0:
        raise RuntimeError("eip_scalarmult_fixed: table not initialised")  # pragma: no cover
    return out


def rerandomizers(
    t1: FixedBase, t2: FixedBase, t3: FixedBase, scalars: npt.NDArray[np.uint8]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """``(r*base1, r*base2, r*base3)`` encoded, for each scalar row r."""
    lib = _require()
    ks = _rows(scalars, 32, "scalars")
    n = len(ks)
    o1, o2, o3 = (np.empty((n, 32), dtype=np.uint8) for _ in range(3))
    rc = lib.eip_rerandomizers(
        t1.address, t2.address, t3.address, _ptr(ks), n, _ptr(o1), _ptr(o2), _ptr(o3)
    )
    if rc != 0:
        raise RuntimeError("eip_rerandomizers: table not initialised")  # pragma: no cover
    return o1, o2, o3


def sampdist(
    t1: FixedBase,
    t2: FixedBase,
    t3: FixedBase,
    wire: npt.NDArray[np.uint8],
    scalars: npt.NDArray[np.uint8],
) -> npt.NDArray[np.uint8]:
    """Row i of ``wire`` (u1||u2||u3) -> ``u_k + r_i * base_k`` for k = 1..3, ``(N, 96)``."""
    lib = _require()
    cts = _rows(wire, 96, "wire ciphertexts")
    ks = _rows(scalars, 32, "scalars")
    if len(ks) != len(cts):
        raise ValueError(f"{len(ks)} scalars for {len(cts)} ciphertexts")
    out = np.empty_like(cts)
    rc = int(
        lib.eip_sampdist(
            t1.address, t2.address, t3.address, _ptr(cts), _ptr(ks), len(cts), _ptr(out)
        )
    )
    if rc == -2:
        raise RuntimeError("eip_sampdist: table not initialised")  # pragma: no cover
    if rc != -1:
        raise EncodingError(f"ciphertext {rc}: not a valid ristretto255 encoding")
    return out


def add(
    x: npt.NDArray[np.uint8], y: npt.NDArray[np.uint8], *, subtract: bool = False
) -> npt.NDArray[np.uint8]:
    """Element-wise ``x + y`` (or ``x - y``); a batch of one broadcasts."""
    lib = _require()
    xa, ya = _rows(x, 32, "ristretto255 elements"), _rows(y, 32, "ristretto255 elements")
    n = max(len(xa), len(ya))
    if len(xa) not in (1, n) or len(ya) not in (1, n):
        raise ValueError(f"cannot broadcast batches of {len(xa)} and {len(ya)} elements")
    out = np.empty((n, 32), dtype=np.uint8)
    sx = 32 if len(xa) == n else 0
    sy = 32 if len(ya) == n else 0
    rc = int(lib.eip_add_batch(_ptr(xa), sx, _ptr(ya), sy, n, int(subtract), _ptr(out)))
    if rc != -1:
        raise EncodingError(f"element {rc}: not a valid ristretto255 encoding")
    return out


def is_valid(encoding: bytes) -> bool:
    """RFC 9496 decoding succeeds (canonical, top bit clear; all-zero is the identity)."""
    lib = _require()
    if len(encoding) != 32:
        return False
    buf = np.frombuffer(bytes(encoding), dtype=np.uint8)
    return bool(lib.eip_is_valid(_ptr(buf)))


# ------------------------------------------------------------------ any number of bases


class Points:
    """Decoded public points held by C (e.g. the halves of a codebook's components).

    Read-only after construction, so threads may share it.
    """

    __slots__ = ("_addr", "_buf", "count")

    def __init__(self, encodings: npt.NDArray[np.uint8]) -> None:
        lib = _require()
        enc = _rows(encodings, 32, "point encodings")
        self.count = len(enc)
        size = int(lib.eip_points_bytes(self.count))
        self._buf = np.zeros((size + 7) // 8, dtype=np.uint64)
        self._addr = _ptr(self._buf)
        rc = int(lib.eip_points_init(self._addr, _ptr(enc), self.count))
        if rc != -1:
            raise EncodingError(f"point {rc}: not a valid ristretto255 encoding")

    @property
    def address(self) -> int:
        return self._addr


class TableSet:
    """Several bases' tables and their address array, built once: a server's batches reuse
    it instead of looking each base up again. Holds the tables, so the addresses stay
    valid after the LRU cache drops them."""

    __slots__ = ("array", "tables")

    def __init__(self, tables: Sequence[FixedBase]) -> None:
        self.tables = tuple(tables)
        self.array = _table_array(self.tables)


def _table_array(tables: Sequence[FixedBase] | TableSet) -> npt.NDArray[np.uintp]:
    if isinstance(tables, TableSet):
        return tables.array
    if not 1 <= len(tables) <= _MAX_BASES:
        raise ValueError(f"between 1 and {_MAX_BASES} bases, got {len(tables)}")
    return np.array([t.address for t in tables], dtype=np.uintp)


def fixed_rows(
    tables: Sequence[FixedBase], scalars: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    """``encode(r_i * base_k)`` as ``uint8 (N, len(tables), 32)``: one recoding of each
    scalar for all the bases and one field inversion per 64 results."""
    lib = _require()
    tabs = _table_array(tables)
    ks = _rows(scalars, 32, "scalars")
    out = np.empty((len(ks), len(tabs), 32), dtype=np.uint8)
    if lib.eip_fixed_rows(_ptr(tabs), len(tabs), _ptr(ks), len(ks), _ptr(out)) != 0:
        raise RuntimeError("eip_fixed_rows: table not initialised")  # pragma: no cover
    return out


def sampdist_slots(
    tables: Sequence[FixedBase] | TableSet,
    halves: Points,
    slots: npt.NDArray[np.integer],
    scalars: npt.NDArray[np.uint8],
    last_scalars: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8]:
    """SampDist of codebook entries: row i = ``c_k + r_i * base_k`` for the entry
    ``c = slots[i]``, ``uint8 (N, len(tables) * 32)``. ``halves`` holds ``c_k / 2`` for
    every entry and component (entry-major), so nothing is decoded or square-rooted per
    row: the sum is formed as ``2 (c_k / 2 + (r_i / 2) base_k)`` and encoded in batches.
    ``last_scalars``: the last base takes these instead (format 2's ``r + K m``; needs
    :func:`has_split_slots`)."""
    lib = _require()
    tabs = _table_array(tables)
    nb = len(tabs)
    ks = _rows(scalars, 32, "scalars")
    sl = np.ascontiguousarray(slots, dtype=np.uint32)
    if sl.ndim != 1 or len(sl) != len(ks):
        raise ValueError(f"{len(ks)} scalars for slots of shape {sl.shape}")
    if halves.count % nb:
        raise ValueError(f"{halves.count} points are not whole entries of {nb} components")
    out = np.empty((len(ks), nb * 32), dtype=np.uint8)
    if last_scalars is None:
        rc = lib.eip_sampdist_slots(
            _ptr(tabs), nb, halves.address, _ptr(sl), _ptr(ks), len(ks), _ptr(out)
        )
    else:
        k2 = _rows(last_scalars, 32, "scalars")
        if len(k2) != len(ks):
            raise ValueError(f"{len(k2)} last-base scalars for {len(ks)} rows")
        rc = lib.eip_sampdist_slots2(
            _ptr(tabs),
            nb,
            nb - 1,
            halves.address,
            _ptr(sl),
            _ptr(ks),
            _ptr(k2),
            len(ks),
            _ptr(out),
        )
    if rc == -2:
        raise RuntimeError("eip_sampdist_slots: table not initialised")  # pragma: no cover
    if rc != -1:
        raise ValueError(
            f"row {rc}: codebook slot {int(sl[rc])} out of range [0, {halves.count // nb})"
        )
    return out


def sampdist_n(
    tables: Sequence[FixedBase], wire: npt.NDArray[np.uint8], scalars: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    """Row i of ``wire`` (``len(tables)`` components) -> ``u_k + r_i * base_k``."""
    lib = _require()
    tabs = _table_array(tables)
    nb = len(tabs)
    cts = _rows(wire, 32 * nb, "wire ciphertexts")
    ks = _rows(scalars, 32, "scalars")
    if len(ks) != len(cts):
        raise ValueError(f"{len(ks)} scalars for {len(cts)} ciphertexts")
    out = np.empty_like(cts)
    rc = int(lib.eip_sampdist_n(_ptr(tabs), nb, _ptr(cts), _ptr(ks), len(cts), _ptr(out)))
    if rc == -2:
        raise RuntimeError("eip_sampdist_n: table not initialised")  # pragma: no cover
    if rc != -1:
        raise EncodingError(f"ciphertext {rc}: not a valid ristretto255 encoding")
    return out


def dec(wire: npt.NDArray[np.uint8], a: bytes, b: bytes) -> npt.NDArray[np.uint8]:
    """Dec of wire rows (u1||u2||u3) under the secret scalars a, b (32 bytes each, little
    endian): ``u3 - (a u1 + b u2)`` per row, constant time in a and b."""
    lib = _require()
    cts = _rows(wire, 96, "wire ciphertexts")
    if len(a) != 32 or len(b) != 32:
        raise ValueError("secret scalars must be 32 bytes")
    ka = np.frombuffer(bytes(a), dtype=np.uint8)
    kb = np.frombuffer(bytes(b), dtype=np.uint8)
    out = np.empty((len(cts), 32), dtype=np.uint8)
    rc = int(lib.eip_dec(_ptr(cts), _ptr(ka), _ptr(kb), len(cts), _ptr(out)))
    if rc != -1:
        raise EncodingError(f"ciphertext {rc}: not a valid ristretto255 encoding")
    return out


def has_split_slots() -> bool:
    """Whether the loaded build has ``eip_sampdist_slots2`` (a codebook SampDist whose last
    base takes its own scalars: format 2 in one call instead of two)."""
    lib = _load()
    return lib is not None and hasattr(lib, "eip_sampdist_slots2")


def has_scalar_draws() -> bool:
    """Whether the loaded build reduces random bytes to scalars itself (``eip_scalars_wide``,
    ``eip_shift_scalars``): a batch's draw then holds the GIL for one ``secrets`` call, not
    a Python loop per row. Older builds leave it to Python (the same bytes)."""
    lib = _load()
    return lib is not None and hasattr(lib, "eip_scalars_wide")


def scalars_wide(raw: bytes) -> npt.NDArray[np.uint8]:
    """``raw`` (64 bytes a row) -> each row's integer mod L, as uint8 ``(N, 32)``."""
    lib = _require()
    if len(raw) % 64:
        raise ValueError(f"{len(raw)} random bytes: need 64 per scalar")
    n = len(raw) // 64
    out = np.empty((n, 32), dtype=np.uint8)
    lib.eip_scalars_wide(raw, n, _ptr(out))  # bytes pass as a pointer to their buffer
    return out


def shift_scalars(
    raw: bytes, k: int, shift_range: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """``raw`` (96 bytes a row) -> ``(r, r + k m mod L)`` per row: ``r`` is the first 64
    bytes mod L, ``m = floor(u * shift_range / 2^256)`` for the last 32 (``u``)."""
    lib = _require()
    if len(raw) % 96:
        raise ValueError(f"{len(raw)} random bytes: need 96 per row")
    n = len(raw) // 96
    out = np.empty((2, n, 32), dtype=np.uint8)
    if lib.eip_shift_scalars(raw, n, k, shift_range, _ptr(out)) != -1:
        raise ValueError(f"shift range {shift_range} or class count {k} out of bounds")
    return out[0], out[1]


def has_small_msm() -> bool:
    """Whether the loaded build has ``eip_small_msm`` (format v2 decryption's fast path;
    without it format v2 composes the same sum from point additions)."""
    lib = _load()
    return lib is not None and hasattr(lib, "eip_small_msm")


def small_msm(
    points: list[npt.NDArray[np.uint8]], coeffs: tuple[int, ...], bits: int
) -> npt.NDArray[np.uint8]:
    """``sum_i coeffs[i] * points[i]`` per row, coefficients in ``[0, 2^bits)``."""
    lib = _require()
    if not points or len(points) != len(coeffs) or len(points) > 32:
        raise ValueError(f"{len(points)} point columns for {len(coeffs)} coefficients (1..32)")
    if not 1 <= bits <= 32 or any(not 0 <= c < 1 << bits for c in coeffs):
        raise ValueError(f"coefficients must lie in [0, 2^{bits})")
    cols = [_rows(p, 32, "ristretto255 elements") for p in points]
    n = len(cols[0])
    stacked = np.ascontiguousarray(np.stack(cols, axis=1))
    cs = np.array(coeffs, dtype=np.uint32)
    out = np.empty((n, 32), dtype=np.uint8)
    rc = int(lib.eip_small_msm(_ptr(stacked), len(cols), _ptr(cs), bits, n, _ptr(out)))
    if rc == -2:
        raise ValueError("eip_small_msm: bad arguments")  # pragma: no cover
    if rc != -1:
        raise EncodingError(f"element {rc}: not a valid ristretto255 encoding")
    return out


def has_progression() -> bool:
    """Whether the loaded build has ``eip_progression`` (format v2 label tables)."""
    lib = _load()
    return lib is not None and hasattr(lib, "eip_progression")


def progression(start_half: bytes, step_half: bytes, count: int) -> npt.NDArray[np.uint8]:
    """``encode(2 (start + i step))`` for ``i < count``, ``uint8 (count, 32)``."""
    lib = _require()
    a = np.frombuffer(bytes(start_half), dtype=np.uint8)
    b = np.frombuffer(bytes(step_half), dtype=np.uint8)
    if len(a) != 32 or len(b) != 32 or count < 0:
        raise ValueError("progression: 32-byte start and step, count >= 0")
    out = np.empty((count, 32), dtype=np.uint8)
    if int(lib.eip_progression(_ptr(a), _ptr(b), count, _ptr(out))) != -1:
        raise EncodingError("progression: start or step is not a valid encoding")
    return out
