"""Secure format v2: CS_lite with n extra generators, class messages on a progression
and Fake triggers that every key holder decrypts to an ordinary class message.

Additive notation over ristretto255 (docs/security.md, "Secure format v2"):

* ``pk = (g_1, ..., g_{n+1}, h)``; owner secrets ``s`` (``h = s g_1``) and ``t_i``
  (``g_{i+1} = t_i g_1``); licensee key ``(a, b_1..b_n)`` with small ``b_i`` in
  ``[0, K)`` and ``a = s - sum b_i t_i``, so ``a g_1 + sum b_i g_{i+1} = h``.
* Message index ``i`` is the element ``M_i = M_0 + i h``; its label is ``i mod K``.
  Class ``y`` is encrypted as ``M_y``.
* ``Enc(M) = (r g_1, ..., r g_{n+1}, r h + M)``;
  ``Dec = u_last - a u_1 - sum b_i u_{i+1}``.
* Trigger ``tau`` (offsets ``k`` in ``{-2,-1,1,2}^n``, base index ``d``):
  ``Fake = Enc(M_d) + (0, k_1 h, ..., k_n h, 0)``, which key ``(a, b)`` decrypts to
  ``M_{d - b.k}``: a label that depends on ``b`` and an index near the class bases.
* Serving (SampDist): ``u_i += r g_i`` and ``u_last += (r + K m) h`` with fresh ``r``
  and ``m`` uniform in ``[0, R)``: a label-preserving shift of the message index by
  ``K m`` on every response, so a key holder sees indices ``y + K m`` for class ``y``
  and ``d - b.k + K m`` for a trigger, which differ only at the window edges.

Decryption looks the decrypted element up in a table of ``M_i`` for ``i`` in
``[index_min, index_max)`` (first 8 bytes of the encoding, sorted, ``searchsorted``);
anything else decodes to ``SHA-256("encryip/v2/label" || D) mod K`` (never an error).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto import r255_native
from encryip_runtime.crypto.group import Elements
from encryip_runtime.crypto.ristretto import L, Ristretto255
from encryip_runtime.crypto.scheme import wire_rows
from encryip_runtime.exceptions import EncodingError, InvalidKeyError, LicenseeLimitError

__all__ = [
    "DEFAULT_SHIFT_RANGE",
    "FALLBACK_LABEL_DOMAIN",
    "CSLiteV2",
    "KeyFamilyV2",
    "LabelTable",
    "PublicKeyV2",
    "SecretKeyV2",
    "Trigger",
    "choose_width",
    "max_agreement",
]

#: R: the runtime's shift ``m`` is uniform in ``[0, R)`` (docs/security.md: trade-off).
DEFAULT_SHIFT_RANGE = 4096
#: Labels of elements that are not in the table (wrong key, garbage).
FALLBACK_LABEL_DOMAIN = b"encryip/v2/label"
#: Offsets of a trigger, per component: +-1 and +-2 (+-1 is a unit mod K, so a single
#: differing b_i changes the label; +-2 makes the 4^n/2 linear forms b.k varied enough
#: that b vectors far apart on every trigger exist for > 1000 licensees, where +-1 alone
#: gave 148 for K = 10, n = 4). The spread of d - b.k is up to 2 (K - 1) n: at most
#: about n windows off a class base once centred. {0, 1} for K = 2.
_OFFSETS = (-2, -1, 1, 2)
_OFFSETS_K2 = (0, 1)
#: Licensee capacity is K^n / _CAPACITY_FACTOR: room for b vectors far from each other.
_CAPACITY_FACTOR = 8
_MAX_WIDTH = 32
_BYTES = 32
_MAX_TABLE = 1 << 24


def choose_width(num_classes: int, num_licensees: int) -> int:
    """n: the smallest width >= 3 with K^n >= 100 * max(licensees, 1000). At least 3: the
    Fakes' offsets k in {+-1, +-2}^n give only 4^n / 2 distinct label rules b -> b.k, and
    with n = 2 (8 rules) too many pairs of b vectors share one (K = 100: 98 licensees
    within the agreement bound, against > 1000 with n = 3)."""
    target = 100 * max(num_licensees, 1000)
    n = 3
    while num_classes**n < target:
        n += 1
    if n > _MAX_WIDTH:
        raise LicenseeLimitError(f"{num_licensees} licensees need more than {_MAX_WIDTH} b_i")
    return n


#: An innocent licensee's trigger labels may agree with the leaker's on m triggers only
#: while P(Bin(T, 1/K) >= m) stays above this: verify-labels (chance 1/K per trigger,
#: alpha 1e-6 after Bonferroni) then never finds it significant beside the leaker.
_AGREEMENT_TAIL = 1e-5


def max_agreement(num_triggers: int, num_classes: int = 10) -> int:
    """Two licensees' keys may give the same label on at most this many triggers: the
    largest m with P(Bin(T, 1/K) >= m) >= 1e-5 (13 of 32 for K = 10; 28 of 32 for
    K = 2, where random labels already agree on half)."""
    t, q = num_triggers, 1.0 / num_classes

    def tail(m: int) -> float:
        return sum(math.comb(t, i) * q**i * (1 - q) ** (t - i) for i in range(m, t + 1))

    m = 0
    while m < t and tail(m + 1) >= _AGREEMENT_TAIL:
        m += 1
    return m


@dataclass(frozen=True)
class PublicKeyV2:
    """``pk = (g_1, ..., g_{n+1}, h)``: ``gens`` is ``uint8 (n+1, 32)``, ``h`` a batch of one."""

    gens: Elements
    h: Elements

    @property
    def width(self) -> int:
        return len(self.gens) - 1

    @property
    def g1(self) -> Elements:
        return self.gens[0:1]

    @property
    def g2(self) -> Elements:
        return self.gens[1:2]

    def parts(self) -> tuple[Elements, ...]:
        return (*(self.gens[i : i + 1] for i in range(len(self.gens))), self.h)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKeyV2):
            return NotImplemented
        return bool(np.array_equal(self.gens, other.gens) and np.array_equal(self.h, other.h))

    def __hash__(self) -> int:
        return hash(self.gens.tobytes() + self.h.tobytes())


@dataclass(frozen=True)
class SecretKeyV2:
    """``(a, b_1..b_n)`` with ``a g_1 + sum b_i g_{i+1} = h``. ``repr`` hides the scalars."""

    a: int = field(repr=False)
    b: tuple[int, ...] = field(repr=False)


@dataclass(frozen=True)
class Trigger:
    """One Fake: base index ``d`` and per-component offsets ``k`` (owner secret)."""

    d: int
    k: tuple[int, ...]

    def base_index(self, b: tuple[int, ...]) -> int:
        """The message index key ``b`` decrypts this trigger to (before the shift)."""
        return self.d - sum(bi * ki for bi, ki in zip(b, self.k, strict=True))


@dataclass(frozen=True)
class KeyFamilyV2:
    """Gen's output: ``h = s g_1``, ``g_{i+1} = t_i g_1`` (owner secrets), and the keys."""

    pk: PublicKeyV2
    s: int = field(repr=False)
    t: tuple[int, ...] = field(repr=False)
    keys: tuple[SecretKeyV2, ...] = field(repr=False)

    @property
    def root(self) -> SecretKeyV2:
        return self.keys[0]


def _ints_to_scalars(values: list[int]) -> npt.NDArray[np.uint8]:
    packed = b"".join((v % L).to_bytes(_BYTES, "little") for v in values)
    return np.frombuffer(packed, dtype=np.uint8).reshape(len(values), _BYTES).copy()


def shift_scalars_from(
    raw: bytes, k: int, shift_range: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """``(r, r + k m mod L)`` per 96-byte row of ``raw``: ``r`` is the first 64 bytes
    (little endian) mod L, as RFC 9496's hash-to-scalar (bias below 2^-250), and
    ``m = floor(u * shift_range / 2^256)`` for the last 32 bytes ``u``: uniform in
    ``[0, shift_range)`` within statistical distance ``shift_range / 2^256``. The
    reference for the native ``eip_shift_scalars`` (same bytes in, same scalars out)."""
    if len(raw) % 96:
        raise ValueError(f"{len(raw)} random bytes: need 96 per row")
    rs, shifted = [], []
    for i in range(0, len(raw), 96):
        r = int.from_bytes(raw[i : i + 64], "little") % L
        m = int.from_bytes(raw[i + 64 : i + 96], "little") * shift_range >> 256
        rs.append(r)
        shifted.append(r + k * m)
    return _ints_to_scalars(rs), _ints_to_scalars(shifted)


def _prefixes(elements: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """First 8 bytes of each encoding as a little-endian uint64."""
    rows = np.ascontiguousarray(elements, dtype=np.uint8).reshape(-1, _BYTES)
    return np.ascontiguousarray(rows[:, :8]).view("<u8").reshape(-1).astype(np.uint64)


class LabelTable:
    """The licensee's decoding state: ``M_i = M_0 + i h`` for ``i`` in ``[lo, hi)``.

    Stored as the sorted 8-byte prefixes of the encodings (uint64) and their indices
    (int32): 12 bytes per entry. Built on first use and cached per process.
    """

    def __init__(
        self,
        group: Ristretto255,
        num_classes: int,
        m0: Elements,
        step: Elements,
        index_min: int,
        index_max: int,
    ):
        if not index_min < index_max or index_max - index_min > _MAX_TABLE:
            raise ValueError(f"label table range [{index_min}, {index_max}) is invalid")
        if index_min > 0 or index_max < num_classes:
            raise ValueError("label table range must contain the class indices [0, K)")
        self.group = group
        self.num_classes = num_classes
        self.m0 = np.ascontiguousarray(m0, dtype=np.uint8).reshape(1, _BYTES)
        self.step = np.ascontiguousarray(step, dtype=np.uint8).reshape(1, _BYTES)
        self.index_min = index_min
        self.index_max = index_max
        self._keys: npt.NDArray[np.uint64] | None = None
        self._idx: npt.NDArray[np.int64] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable (the exporter broadcasts its protection plan to every DDP rank): the
        # lock is per process and the cached table is rebuilt on first use.
        state = dict(self.__dict__)
        state.update(_lock=None, _keys=None, _idx=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.index_max - self.index_min

    @property
    def nbytes(self) -> int:
        """Memory of the built table (12 bytes per entry)."""
        return 12 * self.size

    def messages(self, indices: npt.ArrayLike) -> Elements:
        """``M_0 + i h`` for each index (any integers)."""
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        if not idx:
            return self.group.identity(0)
        steps = self.group.pow_fixed(self.step, _ints_to_scalars(idx))
        return self.group.mul(steps, self.m0)

    def _encodings(self) -> npt.NDArray[np.uint8]:
        """Every ``M_i`` of the range, in index order."""
        from encryip_runtime.crypto import r255_native

        g = self.group
        n = self.size
        if g.backend == "native" and r255_native.has_progression():
            # M_i = 2 (M_lo / 2 + i h / 2): one addition and a batched encoding per entry
            half = (L + 1) // 2
            start = g.pow(self.messages([self.index_min]), half)
            step = g.pow(self.step, half)
            return r255_native.progression(start[0].tobytes(), step[0].tobytes(), n)
        block = max(1, min(n, math.isqrt(n) + 1))
        offsets = g.pow_fixed(self.step, _ints_to_scalars(list(range(block))))
        starts = list(range(self.index_min, self.index_max, block))
        bases = self.messages(starts)
        rows = np.empty((len(starts) * block, _BYTES), dtype=np.uint8)
        for c in range(len(starts)):
            rows[c * block : (c + 1) * block] = g.mul(offsets, bases[c : c + 1])
        return rows[:n]

    def _build(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
        n = self.size
        keys = _prefixes(self._encodings())
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        if n > 1 and bool(np.any(sorted_keys[1:] == sorted_keys[:-1])):
            # 2^-40 for the default sizes; the owner then draws a new M_0 (plan.py).
            raise EncodingError("label table: two indices share an 8-byte prefix")
        return sorted_keys, order.astype(np.int64) + self.index_min

    def ensure_built(self) -> None:
        if self._keys is None:
            with self._lock:
                if self._keys is None:
                    self._keys, self._idx = self._build()

    def indices_of(self, messages: Elements) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """(index, found) per element; index is 0 where not found."""
        self.ensure_built()
        assert self._keys is not None and self._idx is not None
        q = _prefixes(messages)
        pos = np.searchsorted(self._keys, q)
        pos_c = np.minimum(pos, len(self._keys) - 1)
        found = self._keys[pos_c] == q
        return np.where(found, self._idx[pos_c], 0), found

    def labels_of(self, messages: Elements) -> npt.NDArray[np.int64]:
        """``index mod K`` for table elements; the fallback hash rule for the rest."""
        idx, found = self.indices_of(messages)
        out = np.mod(idx, self.num_classes).astype(np.int64)
        rows = np.ascontiguousarray(messages, dtype=np.uint8).reshape(-1, _BYTES)
        for i in np.flatnonzero(~found):
            digest = hashlib.sha256(FALLBACK_LABEL_DOMAIN + rows[i].tobytes()).digest()
            out[i] = int.from_bytes(digest, "big") % self.num_classes
        return out


_tables: OrderedDict[bytes, LabelTable] = OrderedDict()
_tables_lock = threading.Lock()


def cached_table(
    group: Ristretto255, num_classes: int, m0: Elements, step: Elements, lo: int, hi: int
) -> LabelTable:
    """One table per (M_0, h, K, range) per process (a few kept)."""
    key = b"".join(
        [np.asarray(m0).tobytes(), np.asarray(step).tobytes(), f"{num_classes}:{lo}:{hi}".encode()]
    )
    with _tables_lock:
        hit = _tables.get(key)
        if hit is not None:
            _tables.move_to_end(key)
            return hit
        table = LabelTable(group, num_classes, m0, step, lo, hi)
        _tables[key] = table
        while len(_tables) > 4:
            _tables.popitem(last=False)
        return table


class CSLiteV2:
    """The v2 scheme over ristretto255 for K classes, width n and shift range R.

    ``table`` (the licensee's decoding state) is present when the scheme was built from
    a key file or the vault; a manifest's scheme can serve but not decrypt labels.
    """

    profile = "secure"
    format_version = 2

    def __init__(
        self,
        num_classes: int,
        width: int,
        shift_range: int = DEFAULT_SHIFT_RANGE,
        table: LabelTable | None = None,
        group: Ristretto255 | None = None,
    ):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if not 1 <= width <= _MAX_WIDTH:
            raise ValueError(f"width must be in [1, {_MAX_WIDTH}], got {width}")
        if not 1 <= shift_range <= 1 << 20:
            raise ValueError(f"shift_range must be in [1, 2^20], got {shift_range}")
        self.group = Ristretto255() if group is None else group
        self.num_classes = num_classes
        self.width = width
        self.shift_range = shift_range
        self.table = table

    # -- sizes ----------------------------------------------------------------
    @property
    def components(self) -> int:
        """Elements per ciphertext: n + 2."""
        return self.width + 2

    @property
    def ciphertext_size(self) -> int:
        return self.components * _BYTES

    @property
    def max_licensees(self) -> int:
        return max(1, self.num_classes**self.width // _CAPACITY_FACTOR)

    @property
    def offsets(self) -> tuple[int, ...]:
        return _OFFSETS_K2 if self.num_classes == 2 else _OFFSETS

    @property
    def codec(self) -> LabelTable:
        """The label rule (the decoding table); only schemes built with a table have it."""
        if self.table is None:
            raise InvalidKeyError("no label table: load the scheme from a key file or the vault")
        return self.table

    def with_table(self, table: LabelTable | None) -> CSLiteV2:
        return CSLiteV2(self.num_classes, self.width, self.shift_range, table, self.group)

    # -- Gen ------------------------------------------------------------------
    def gen(self, num_licensees: int, triggers: tuple[Trigger, ...] = ()) -> KeyFamilyV2:
        """Fresh generators and ``num_licensees`` keys with b vectors far apart on
        ``triggers`` (at most :func:`max_agreement` equal trigger labels per pair)."""
        if num_licensees < 1:
            raise ValueError(f"need at least one licensee, got {num_licensees}")
        g = self.group
        ts = [self._nonzero_scalar() for _ in range(self.width)]
        s = self._nonzero_scalar()
        g1 = g.generator()
        gens = np.concatenate([g1, *(g.pow(g1, t) for t in ts)], axis=0)
        pk = PublicKeyV2(gens, g.pow(g1, s))
        family = KeyFamilyV2(pk, s, tuple(ts), ())
        for _ in range(num_licensees):
            family = self.add_licensee(family, triggers)
        return family

    def _nonzero_scalar(self) -> int:
        while True:
            k = self.group.random_scalar()
            if k != 0:
                return k

    def key_for(self, family: KeyFamilyV2, b: tuple[int, ...]) -> SecretKeyV2:
        """The key with vector ``b``: ``a = s - sum b_i t_i``."""
        a = (family.s - sum(bi * ti for bi, ti in zip(b, family.t, strict=True))) % L
        return SecretKeyV2(a, tuple(b))

    def random_key(self) -> SecretKeyV2:
        """A key of the right shape, almost surely of no family (tests, wrong-key accuracy)."""
        b = tuple(secrets.randbelow(self.num_classes) for _ in range(self.width))
        return SecretKeyV2(self.group.random_scalar(), b)

    def trigger_labels(self, b: tuple[int, ...], triggers: tuple[Trigger, ...]) -> list[int]:
        return [tr.base_index(b) % self.num_classes for tr in triggers]

    def add_licensee(
        self, family: KeyFamilyV2, triggers: tuple[Trigger, ...] = (), tries: int = 4096
    ) -> KeyFamilyV2:
        """One more key: a fresh b vector whose trigger labels agree with every existing
        key's on at most ``max_agreement(T)`` triggers. Others untouched."""
        count = len(family.keys) + 1
        if count > self.max_licensees:
            raise LicenseeLimitError(
                f"{count} licensees requested but this release's keys have n = {self.width} "
                f"components b_i in [0, {self.num_classes}): at most {self.max_licensees} "
                "licensees; rotate the keys into a wider release for more"
            )
        k = self.num_classes
        used = {key.b for key in family.keys}
        limit = max_agreement(len(triggers), k)
        offs = np.array([tr.k for tr in triggers], dtype=np.int64).reshape(-1, self.width)
        ds = np.array([tr.d for tr in triggers], dtype=np.int64)
        existing = (
            np.mod(ds[None, :] - np.array([key.b for key in family.keys]) @ offs.T, k)
            if triggers and family.keys
            else None
        )
        batch = 64
        for _ in range(0, tries, batch):
            cands = np.array(
                [[secrets.randbelow(k) for _ in range(self.width)] for _ in range(batch)],
                dtype=np.int64,
            )
            ok = np.ones(batch, dtype=bool)
            if existing is not None:
                labels = np.mod(ds[None, :] - cands @ offs.T, k)  # (batch, T)
                agree = np.zeros(batch, dtype=np.int64)
                for start in range(0, len(existing), 256):  # bounded memory
                    chunk = existing[start : start + 256]
                    same = (labels[:, None, :] == chunk[None, :, :]).sum(axis=2)
                    agree = np.maximum(agree, same.max(axis=1))
                ok = agree <= limit
            for row in np.flatnonzero(ok):
                b = tuple(int(v) for v in cands[row])
                if b not in used:
                    key = self.key_for(family, b)
                    return KeyFamilyV2(family.pk, family.s, family.t, (*family.keys, key))
        raise LicenseeLimitError(
            f"no b vector found in {tries} tries whose trigger labels differ enough from the "
            f"{len(family.keys)} existing licensees' (n = {self.width}, K = {k}): the release "
            "is at capacity; rotate the keys into a wider release"
        )

    def check_key(self, pk: PublicKeyV2, sk: SecretKeyV2) -> None:
        """Raise ``InvalidKeyError`` unless ``a g_1 + sum b_i g_{i+1} == h`` and b is small."""
        g = self.group
        if len(sk.b) != self.width or pk.width != self.width:
            raise InvalidKeyError(f"secret key has {len(sk.b)} b_i, the public key {pk.width}")
        if not 0 <= sk.a < L or any(not 0 <= bi < self.num_classes for bi in sk.b):
            raise InvalidKeyError(
                f"secret key scalars out of range (b_i in [0, {self.num_classes}))"
            )
        acc = g.pow(pk.g1, sk.a)
        for i, bi in enumerate(sk.b):
            acc = g.mul(acc, g.pow(pk.gens[i + 1 : i + 2], bi))
        if not g.equal(acc, pk.h):
            raise InvalidKeyError(
                "secret key does not match the public key (a g1 + sum b_i g_(i+1) != h)"
            )

    # -- Enc / Fake / SampDist -----------------------------------------------
    def _rows(self, scalars: npt.NDArray[np.uint8], pk: PublicKeyV2) -> list[Elements]:
        g = self.group
        return [g.pow_fixed(pk.gens[i : i + 1], scalars) for i in range(len(pk.gens))]

    def enc(self, pk: PublicKeyV2, messages: Elements) -> npt.NDArray[np.uint8]:
        """``(r g_1, ..., r g_{n+1}, r h + M)`` with fresh r per row."""
        g = self.group
        ks = g.random_scalars(len(messages))
        parts = self._rows(ks, pk)
        parts.append(g.mul(g.pow_fixed(pk.h, ks), messages))
        return np.stack(parts, axis=1)

    def fake(
        self, pk: PublicKeyV2, table: LabelTable, triggers: tuple[Trigger, ...]
    ) -> npt.NDArray[np.uint8]:
        """``Enc(M_d) + (0, k_1 h, ..., k_n h, 0)`` per trigger."""
        g = self.group
        if not triggers:
            return np.zeros((0, self.components, _BYTES), dtype=np.uint8)
        cts = self.enc(pk, table.messages([tr.d for tr in triggers]))
        for i in range(self.width):
            ks = _ints_to_scalars([tr.k[i] for tr in triggers])
            cts[:, i + 1] = g.mul(cts[:, i + 1], g.pow_fixed(pk.h, ks))
        return cts

    def make_triggers(self, count: int) -> tuple[Trigger, ...]:
        """Random offsets per trigger, each base index centred on the class bases."""
        k = self.num_classes
        out = []
        for _ in range(count):
            offs = tuple(secrets.choice(self.offsets) for _ in range(self.width))
            y = secrets.randbelow(k)
            pos = sum(o for o in offs if o > 0) * (k - 1)  # b.k in [-neg, pos]
            neg = -sum(o for o in offs if o < 0) * (k - 1)
            # index range of d - b.k is [y - pos, y + neg]; shift by whole windows to centre
            mid = (y - pos + y + neg) / 2
            c = round((k / 2 - mid) / k)
            out.append(Trigger(y + k * c, offs))
        return tuple(out)

    def index_range(self, triggers: tuple[Trigger, ...]) -> tuple[int, int]:
        """``[index_min, index_max)`` covering every class and trigger index after any
        shift, for every b in ``[0, K)^n``."""
        k = self.num_classes
        lo, hi = 0, k - 1
        for tr in triggers:
            pos = sum(o for o in tr.k if o > 0) * (k - 1)
            neg = -sum(o for o in tr.k if o < 0) * (k - 1)
            lo = min(lo, tr.d - pos)
            hi = max(hi, tr.d + neg)
        lo_w = lo // k  # whole windows
        hi_w = hi // k
        return k * lo_w, k * (hi_w + self.shift_range)

    def shift_scalars(self, count: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """Fresh ``r`` and ``r + K m`` (m uniform in [0, R)) per row, from ``secrets``:
        96 bytes a row, reduced by :func:`shift_scalars_from`."""
        raw = secrets.token_bytes(96 * count)
        if self.group.backend == "native" and r255_native.has_scalar_draws():
            # The same integers, computed in C with the GIL released: a batch's share on
            # one crypto thread no longer queues the other shares behind a Python loop.
            return r255_native.shift_scalars(raw, self.num_classes, self.shift_range)
        return shift_scalars_from(raw, self.num_classes, self.shift_range)

    def rerandomizers(self, pk: PublicKeyV2, count: int) -> tuple[Elements, ...]:
        """``(r g_1, ..., r g_{n+1}, (r + K m) h)`` per row: one SampDist's whole cost.
        Each tuple must be used once."""
        rs, shifted = self.shift_scalars(count)
        parts = self._rows(rs, pk)
        parts.append(self.group.pow_fixed(pk.h, shifted))
        return tuple(parts)

    def sampdist(
        self,
        pk: PublicKeyV2,
        cts: npt.NDArray[np.uint8],
        rerandomizers: tuple[Elements, ...] | None = None,
        scalars: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """SampDist plus the label-preserving shift: a fresh sample per row.

        ``rerandomizers`` (from :meth:`rerandomizers`, used once) or ``scalars``
        (``r`` and ``r + K m`` per row, tests) replace the fresh draw. Native: one C
        call; libsodium otherwise (same bytes for the same scalars).
        """
        c = self._check_cts(cts)
        if rerandomizers is None:
            rs, shifted = scalars if scalars is not None else self.shift_scalars(len(c))
            g, parts = self.group, pk.parts()
            head = g.sampdist_rows(parts[:-1], c[:, :-1], rs)
            last = g.sampdist_rows(parts[-1:], c[:, -1:], shifted)
            return np.concatenate([head, last], axis=1)
        rr = rerandomizers
        if len(rr) != self.components or any(len(x) != len(c) for x in rr):
            raise ValueError(f"re-randomisers do not match {len(c)} ciphertexts")
        g = self.group
        return np.stack([g.mul(rr[i], c[:, i]) for i in range(self.components)], axis=1)

    def prepare_codebook(self, codebook: npt.NDArray[np.uint8]) -> Any:
        """The codebook in the form the group's fast codebook SampDist wants. Native: one
        prepared codebook, whose last component takes its own scalar in the same call.
        Otherwise split: the first n + 1 components (one scalar r) and the last (its
        own r + K m)."""
        cb = self._check_cts(codebook)
        g = self.group
        if g.backend == "native" and r255_native.has_split_slots():
            return g.prepare_codebook(cb)
        return g.prepare_codebook(cb[:, :-1]), g.prepare_codebook(cb[:, -1:])

    def sampdist_codebook(
        self,
        pk: PublicKeyV2,
        prepared: Any,
        slots: npt.NDArray[np.integer],
        scalars: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """``sampdist(pk, codebook[slots])``, from :meth:`prepare_codebook`'s form."""
        sl = np.asarray(slots)
        rs, shifted = scalars if scalars is not None else self.shift_scalars(len(sl))
        g, parts = self.group, pk.parts()
        if not isinstance(prepared, tuple):  # native, all components in one call
            return g.sampdist_codebook(parts, prepared, sl, rs, last_scalars=shifted)
        head_cb, last_cb = prepared
        head = g.sampdist_codebook(parts[:-1], head_cb, sl, rs)
        last = g.sampdist_codebook(parts[-1:], last_cb, sl, shifted)
        return np.concatenate([head, last], axis=1)

    def _check_cts(self, cts: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        c = np.ascontiguousarray(cts, dtype=np.uint8)
        if c.ndim != 3 or c.shape[1:] != (self.components, _BYTES):
            raise EncodingError(
                f"expected uint8 (N, {self.components}, {_BYTES}) ciphertexts, got {c.shape}"
            )
        return c

    # -- Dec ------------------------------------------------------------------
    def dec(self, sk: SecretKeyV2, cts: npt.NDArray[np.uint8]) -> Elements:
        """``u_last - a u_1 - sum b_i u_{i+1}`` per row."""
        c = self._check_cts(cts)
        g = self.group
        mask = g.pow(c[:, 0], sk.a)
        small = _small_msm(g, [c[:, i + 1] for i in range(self.width)], sk.b, self.num_classes)
        return g.div(c[:, -1], g.mul(mask, small))

    def decrypt_labels(self, sk: SecretKeyV2, cts: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        if self.table is None:
            raise InvalidKeyError("no label table: load the scheme from a key file or the vault")
        return self.table.labels_of(self.dec(sk, cts))

    def decrypt_indices(
        self, sk: SecretKeyV2, cts: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Message index per row and whether it was in the table (detectors, tests)."""
        if self.table is None:
            raise InvalidKeyError("no label table: load the scheme from a key file or the vault")
        return self.table.indices_of(self.dec(sk, cts))

    def owner_signatures(self, family: KeyFamilyV2, cts: npt.NDArray[np.uint8]) -> list[bytes]:
        """What a ciphertext is, seen with the trapdoor; unchanged by SampDist.

        ``u_{i+1} - t_i u_1`` is ``k_i h`` for a Fake and the identity for an Enc, and
        ``u_last - s u_1`` is ``M_index`` (``index mod K`` is kept, the shift is not), so
        the bytes of these identify a codebook row even after re-randomisation.
        """
        c = self._check_cts(cts)
        g = self.group
        cols = [g.div(c[:, i + 1], g.pow(c[:, 0], t)) for i, t in enumerate(family.t)]
        base = g.div(c[:, -1], g.pow(c[:, 0], family.s))
        if self.table is not None:
            idx, found = self.table.indices_of(base)
            label = np.where(found, np.mod(idx, self.num_classes), -1)
            tail = [
                int(v).to_bytes(4, "little", signed=True) + (b"" if f else bytes(row))
                for v, f, row in zip(label, found, base, strict=True)
            ]
        else:
            tail = [bytes(row) for row in base]
        return [b"".join(bytes(col[r]) for col in cols) + tail[r] for r in range(len(c))]

    # -- wire -----------------------------------------------------------------
    def to_wire(self, cts: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        c = self._check_cts(cts)
        return c.reshape(len(c), self.ciphertext_size)

    def from_wire(self, data: npt.NDArray[np.uint8] | bytes | list[bytes]) -> npt.NDArray[np.uint8]:
        """Parse and validate wire ciphertexts (n + 2 canonical encodings per row)."""
        arr = wire_rows(data, self.ciphertext_size)
        rows = arr.reshape(len(arr), self.components, _BYTES)
        comps = []
        for k in range(self.components):
            try:
                comps.append(self.group.from_bytes(np.ascontiguousarray(rows[:, k])))
            except EncodingError as exc:
                raise EncodingError(f"ciphertext component u{k + 1}: {exc}") from None
        return np.stack(comps, axis=1)


def _small_msm(
    g: Ristretto255, points: list[Elements], coeffs: tuple[int, ...], num_classes: int
) -> Elements:
    """``sum_i coeffs[i] * points[i]`` per row for small coefficients in ``[0, K)``.

    Native: one C call (``eip_small_msm``). Otherwise a double-and-add over the batch
    whose sequence of operations depends only on K and n (adds the identity for a 0 bit).
    """
    from encryip_runtime.crypto import r255_native

    n = len(points[0]) if points else 0
    if g.backend == "native" and r255_native.has_small_msm():
        return r255_native.small_msm(points, coeffs, (num_classes - 1).bit_length())
    bits = max(1, (num_classes - 1).bit_length())
    zero = g.identity(n)
    acc = zero
    for bit in range(bits - 1, -1, -1):
        acc = g.mul(acc, acc)
        for p, c in zip(points, coeffs, strict=True):
            acc = g.mul(acc, p if (c >> bit) & 1 else zero)
    return acc
