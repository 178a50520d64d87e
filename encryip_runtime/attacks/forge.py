"""Key forgery against CS_lite: what an attacker without a licence can do.

A key ``(a, b)`` is valid for ``pk = (g1, g2, h)`` iff ``g1^a g2^b = h``; writing
``g2 = g1^t`` and ``h = g1^s``, the valid keys are exactly the line
``a + t·b = s (mod n)``. Two generic attacks, both over the ``Group`` interface:

* ``brute_force_key``: search ``(a, b)`` in ``[0, bound)^2`` for a pair that
  decrypts every observed confused label to its known plain label. It needs a few
  ``(confused label, label)`` observations and no discrete logs. In the ``paper``
  profile the whole exponent range is tiny (``n = p - 1``), so it always succeeds;
  in ``secure`` (``n = L ≈ 2^252``) a bounded search finds nothing.
* ``forge_key_from_public_key``: the shortcut. It needs no observations at all:
  discrete logs of ``g2`` and ``h`` (baby-step giant-step, bounded) give ``t`` and
  ``s``, and every ``(s - t·b, b)`` is a working key. In ``paper`` this is a table
  look-up; in ``secure`` it is the discrete-log problem, and the bounded search fails.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.group import Elements, Group
from encryip_runtime.crypto.scheme import Ciphertexts, CSLite, PublicKey, SecretKey

__all__ = ["bounded_dlog", "brute_force_key", "forge_key_from_public_key"]

#: Default search bound: covers every paper-profile group, a sliver of ristretto255.
DEFAULT_BOUND = 1 << 12
DEFAULT_DLOG_BOUND = 1 << 24


def _tile(x: Elements, times: int) -> Elements:
    a = np.asarray(x)
    return np.tile(a, (times,) + (1,) * (a.ndim - 1))


def brute_force_key(
    scheme: CSLite,
    cts: Ciphertexts,
    labels: npt.ArrayLike,
    *,
    bound: int = DEFAULT_BOUND,
) -> SecretKey | None:
    """The first ``(a, b)`` in ``[0, bound)^2`` (a-major) that decrypts every
    observed ciphertext ``cts[i]`` to ``labels[i]``, or ``None``.

    Uses only group operations and the public label rule: ``u2^b`` for every b is
    tabulated once per observation by repeated multiplication, then each ``a`` costs
    one batch ``Dec`` over the table. Work: ``O(bound^2 · len(cts))`` group
    operations, which is nothing for ``p - 1 ≤ 1008`` and hopeless for ``L``.
    """
    g: Group = scheme.group
    cts = np.asarray(cts)
    want = np.asarray(labels, dtype=np.int64).reshape(-1)
    m = len(cts)
    if m == 0 or len(want) != m:
        raise ValueError(f"need one label per observed ciphertext, got {m} and {len(want)}")
    if bound < 1:
        raise ValueError(f"bound must be positive, got {bound}")
    limit = min(bound, g.order)
    u1, u2, u3 = cts[:, 0], cts[:, 1], cts[:, 2]
    # table row b*m + i = u2_i^b
    rows = [g.identity(m)]
    for _ in range(1, limit):
        rows.append(g.mul(rows[-1], u2))
    u2_pow_b = g.stack(rows)
    u3_tiled = _tile(u3, limit)
    u1_pow_a = g.identity(m)
    for a in range(limit):
        mask = g.mul(_tile(u1_pow_a, limit), u2_pow_b)
        got = scheme.codec.labels_of(g.div(u3_tiled, mask)).reshape(limit, m)
        hits = np.flatnonzero((got == want[None, :]).all(axis=1))
        if hits.size:
            return SecretKey(a % g.order, int(hits[0]) % g.order)
        u1_pow_a = g.mul(u1_pow_a, u1)
    return None


def _key(g: Group, x: Elements) -> bytes:
    return bytes(np.ascontiguousarray(g.to_bytes(x)).tobytes())


def bounded_dlog(group: Group, base: Elements, target: Elements, bound: int) -> int | None:
    """``x`` in ``[0, bound)`` with ``base^x = target`` (baby-step giant-step), or ``None``.

    ``base`` and ``target`` are batches of one element. ``O(sqrt(bound))`` group
    operations and memory.
    """
    g = group
    bound = min(bound, g.order)
    if bound < 1:
        return None
    step = math.isqrt(bound - 1) + 1
    baby: dict[bytes, int] = {}
    e = g.identity(1)
    for j in range(step):
        baby.setdefault(_key(g, e), j)
        e = g.mul(e, base)
    giant_stride = e  # base^step
    y = np.asarray(target)
    for i in range(step):
        hit = baby.get(_key(g, y))
        if hit is not None:
            x = i * step + hit
            if x < bound and g.equal(g.pow(base, x), target):
                return x
        y = g.div(y, giant_stride)
    return None


def forge_key_from_public_key(
    scheme: CSLite, pk: PublicKey, *, bound: int = DEFAULT_DLOG_BOUND, b: int | None = None
) -> SecretKey | None:
    """A working key from ``pk`` alone, if ``log_g1(g2)`` and ``log_g1(h)`` are below ``bound``.

    ``b`` picks the point on the line of valid keys (random when ``None``).
    """
    g = scheme.group
    t = bounded_dlog(g, pk.g1, pk.g2, bound)
    if t is None:
        return None
    s = bounded_dlog(g, pk.g1, pk.h, bound)
    if s is None:
        return None
    n = g.order
    bb = g.random_scalar() % n if b is None else b % n
    return SecretKey((s - t * bb) % n, bb)
