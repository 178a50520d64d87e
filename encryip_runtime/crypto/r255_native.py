"""Native ristretto255 backend: per-base fixed-base tables for SampDist (``_r255.c``).

The C file is our own code (docs/security.md, "Native ristretto255 backend"). It is
built by setuptools as the extension ``encryip_runtime.crypto._r255`` (an empty
CPython module) and loaded here with ``ctypes.CDLL``, so each call releases the
GIL like the libsodium calls in ``ristretto.py``. When it is not built (no
compiler at install time) or ``ENCRYIP_NATIVE=0`` is set, :func:`available` is
false and ``Ristretto255`` keeps using libsodium; both give the same bytes.

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

import numpy as np
import numpy.typing as npt

from encryip_runtime.exceptions import EncodingError

__all__ = [
    "ENV_VAR",
    "FixedBase",
    "add",
    "available",
    "has_small_msm",
    "is_valid",
    "rerandomizers",
    "sampdist",
    "sampdist_n",
    "scalarmult",
    "small_msm",
    "table_for",
]

log = logging.getLogger(__name__)

#: ``ENCRYIP_NATIVE=0`` (or false/no/off) forces the libsodium path; read on every call
#: so tests and benchmarks can compare both paths in one process.
ENV_VAR = "ENCRYIP_NATIVE"
_MODULE = "encryip_runtime.crypto._r255"
_ABI_VERSION = 1  # must match EIP_ABI_VERSION in _r255.c
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
    if hasattr(lib, "eip_small_msm"):  # secure format v2 decryption (newer builds)
        lib.eip_small_msm.argtypes = [_P, _N, _P, ctypes.c_int, _N, _P]
        lib.eip_small_msm.restype = ctypes.c_long
    if hasattr(lib, "eip_sampdist_n"):
        lib.eip_sampdist_n.argtypes = [_P, _N, _P, _P, _P, _N, _P]
        lib.eip_sampdist_n.restype = ctypes.c_long


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
                    _lib = lib
        except (ImportError, OSError, AttributeError) as exc:
            _why_not = f"cannot load {_MODULE}: {exc}"
        _loaded = True
    return _lib


def _disabled_by_env() -> bool:
    return os.environ.get(ENV_VAR, "").strip().lower() in ("0", "false", "no", "off")


def available() -> bool:
    """Whether the native backend is built, loadable and not disabled by ``ENCRYIP_NATIVE``."""
    global _logged
    ok = not _disabled_by_env() and _load() is not None
    if ok != _logged:  # log each change of backend once, not every call
        _logged = ok
        if ok:
            log.debug("ristretto255 SampDist backend: native fixed-base tables (%s)", _MODULE)
        elif _disabled_by_env():
            log.debug("ristretto255 SampDist backend: libsodium (%s=0)", ENV_VAR)
        else:
            log.debug("ristretto255 SampDist backend: libsodium (%s)", _why_not)
    return ok


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


def has_small_msm() -> bool:
    """Whether the loaded build has ``eip_small_msm`` and ``eip_sampdist_n`` (format v2's
    fast paths; an older in-tree build lacks them and format v2 then composes the rest)."""
    lib = _load()
    return lib is not None and hasattr(lib, "eip_small_msm") and hasattr(lib, "eip_sampdist_n")


def sampdist_n(
    tables: list[FixedBase],
    cts: npt.NDArray[np.uint8],
    scalars: npt.NDArray[np.uint8],
    last_scalars: npt.NDArray[np.uint8],
) -> npt.NDArray[np.uint8]:
    """``u_k + s * base_k`` per row and component: ``s`` = ``scalars`` except the last
    component, which takes ``last_scalars``. ``cts`` is ``uint8 (N, m, 32)``."""
    lib = _require()
    m = len(tables)
    c = np.ascontiguousarray(cts, dtype=np.uint8)
    if c.ndim != 3 or c.shape[1:] != (m, 32):
        raise EncodingError(f"expected uint8 (N, {m}, 32) ciphertexts, got {c.shape}")
    ks = _rows(scalars, 32, "scalars")
    ls = _rows(last_scalars, 32, "scalars")
    if len(ks) != len(c) or len(ls) != len(c):
        raise ValueError(f"{len(ks)}/{len(ls)} scalars for {len(c)} ciphertexts")
    addrs = (ctypes.c_void_p * m)(*(t.address for t in tables))
    out = np.empty_like(c)
    rc = int(lib.eip_sampdist_n(addrs, m, _ptr(c), _ptr(ks), _ptr(ls), len(c), _ptr(out)))
    if rc == -2:
        raise RuntimeError("eip_sampdist_n: table not initialised")  # pragma: no cover
    if rc != -1:
        raise EncodingError(f"ciphertext {rc}: not a valid ristretto255 encoding")
    return out


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
