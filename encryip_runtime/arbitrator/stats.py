"""The arbitrator's statistics: exact tail bounds, computed in log space.

Every p-value here is an upper bound on the probability of the observed evidence
(or stronger) under a stated null hypothesis; docs/arbitrator.md states each null.
Log space keeps bounds like 1e-80 exact where a float product would underflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = [
    "PValue",
    "binomial_tail_log10",
    "min_count_for",
    "occupancy_tail_log10",
    "poisson_binomial_tail_log10",
    "slot_fingerprint_log10",
    "to_p",
]

_LN10 = math.log(10.0)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _logsumexp(values: Sequence[float]) -> float:
    finite = [v for v in values if v != -math.inf]
    if not finite:
        return -math.inf
    m = max(finite)
    return m + math.log(sum(math.exp(v - m) for v in finite))


def to_p(log10_p: float) -> float:
    """10 ** log10_p as a float (0.0 only below ~1e-308; the log form stays exact)."""
    return 0.0 if log10_p < -320 else min(1.0, 10.0**log10_p)


class PValue:
    """Mixin for evidence and verdicts that carry ``log10_p_value``: its float form."""

    log10_p_value: float

    @property
    def p_value(self) -> float:
        return to_p(self.log10_p_value)


def binomial_tail_log10(n: int, k: int, q: float) -> float:
    """log10 P(Bin(n, q) >= k), exact (sum in log space)."""
    if k <= 0:
        return 0.0
    if k > n or q <= 0.0:
        return -math.inf
    if q >= 1.0:
        return 0.0
    lq, l1q = math.log(q), math.log1p(-q)
    terms = [_log_comb(n, j) + j * lq + (n - j) * l1q for j in range(k, n + 1)]
    return min(0.0, _logsumexp(terms) / _LN10)


def poisson_binomial_tail_log10(qs: Sequence[float], k: int) -> float:
    """log10 P(sum of independent Bernoulli(q_i) >= k), exact by dynamic programming.

    Valid as a bound when each event has probability *at most* q_i (stochastic dominance).
    """
    if k <= 0:
        return 0.0
    if k > len(qs):
        return -math.inf
    # dp[j] = log P(exactly j successes so far)
    dp = [0.0] + [-math.inf] * len(qs)
    for i, q in enumerate(qs, start=1):
        q = min(max(q, 0.0), 1.0)
        lq = math.log(q) if q > 0 else -math.inf
        l1q = math.log1p(-q) if q < 1 else -math.inf
        new = [-math.inf] * len(dp)
        for j in range(i + 1):
            a = dp[j] + l1q if dp[j] != -math.inf and l1q != -math.inf else -math.inf
            b = (
                dp[j - 1] + lq
                if j > 0 and dp[j - 1] != -math.inf and lq != -math.inf
                else -math.inf
            )
            new[j] = _logsumexp([a, b])
        dp = new
    return min(0.0, _logsumexp(dp[k:]) / _LN10)


def slot_fingerprint_log10(num_triggers: int, num_slots: int, hits: int) -> float:
    """Bound on log10 P(>= hits triggers land on their own secret slot).

    Null: the secret slot order is a uniformly random permutation of ``num_slots``
    chosen independently of the suspect model. Union bound over which ``hits``
    triggers hit: each set of h triggers hits its h (distinct) secret slots with
    probability (S - h)! / S!. So P <= C(T, h) (S - h)! / S!.
    """
    t, s, h = num_triggers, num_slots, hits
    if h <= 0:
        return 0.0
    if h > t or h > s:
        return -math.inf
    log = _log_comb(t, h) + math.lgamma(s - h + 1) - math.lgamma(s + 1)
    return min(0.0, log / _LN10)


def occupancy_tail_log10(num_triggers: int, free_slots: int, num_slots: int, hits: int) -> float:
    """log10 P(>= hits distinct free slots are hit), exact, when each of T inputs lands
    independently and uniformly on one of S slots, ``free_slots`` (R) of which are free.

    A Markov chain over d = free slots hit so far: the next input hits a new free slot
    with probability (R - d) / S. (All T on distinct free slots: (R)_T / S^T.)
    """
    t, r, s, h = num_triggers, free_slots, num_slots, hits
    if h <= 0:
        return 0.0
    if h > t or h > r:
        return -math.inf
    dp = [0.0] + [-math.inf] * r  # log P(d)
    for _ in range(t):
        new = [-math.inf] * (r + 1)
        for d in range(r + 1):
            if dp[d] == -math.inf:
                continue
            stay = (s - r + d) / s
            if stay > 0:
                new[d] = _logsumexp([new[d], dp[d] + math.log(stay)])
            if d < r:
                new[d + 1] = _logsumexp([new[d + 1], dp[d] + math.log((r - d) / s)])
        dp = new
    return min(0.0, _logsumexp(dp[h:]) / _LN10)


def min_count_for(
    log10_bound: Callable[[int], float], max_count: int, log10_alpha: float
) -> int | None:
    """The smallest count c in 1..max_count with log10_bound(c) < log10_alpha (None if none).

    ``log10_bound`` must be non-increasing in c (true of every tail above).
    """
    for c in range(1, max_count + 1):
        if log10_bound(c) < log10_alpha:
            return c
    return None
