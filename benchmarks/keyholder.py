"""A single key holder against secure format v2 (issue 14): what its decryptions reveal.

Sections:

tradeoff    for K in (10, 100) and shift ranges R: the licensee's label table (entries,
            bytes, build time) and the exact re-query advantage for k = 1..256
            decryptions per query (mean and worst over 32 triggers x the licensees'
            keys; ``encryip_runtime.attacks.keyholder.requery_advantage``).
detectors   the detectors as a proxy would run them, on real ciphertexts of the
            default R (SampDist'ed codebook rows; the model only picks the row):
            membership (one decryption per query) and re-query (k = 16, 64) on v2,
            the same membership detector on format v1 for comparison.
cost        decrypt cost per row, format v1 and v2 side by side in one process (the
            table built beforehand, its build time reported in ``tradeoff``), and
            SampDist per row on the server's codebook path.

    python -m benchmarks.keyholder [--quick]

The last stdout line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np

from benchmarks.common import emit, env_info
from encryip_runtime.attacks.keyholder import (
    MembershipDetector,
    RequeryDetector,
    advantage,
    requery_advantage,
)
from encryip_runtime.crypto import make_scheme
from encryip_runtime.crypto.labels import HashLabelCodec
from encryip_runtime.crypto.profiles import make_scheme_v2
from encryip_runtime.crypto.scheme_v2 import DEFAULT_SHIFT_RANGE, CSLiteV2, KeyFamilyV2, Trigger
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.release.plan import new_label_table

log = logging.getLogger("encryip.bench.keyholder")

KS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
NUM_TRIGGERS = 32


def _release(
    k: int, licensees: int, shift_range: int
) -> tuple[CSLiteV2, KeyFamilyV2, tuple[Trigger, ...], float]:
    scheme = make_scheme_v2(k, max(licensees, 1000), shift_range)
    triggers = scheme.make_triggers(NUM_TRIGGERS)
    family = scheme.gen(licensees, triggers)
    lo, hi = scheme.index_range(triggers)
    t0 = time.perf_counter()
    table = new_label_table(scheme, family.pk.h, lo, hi)
    build_s = time.perf_counter() - t0
    return scheme.with_table(table), family, triggers, build_s


def tradeoff(quick: bool) -> list[dict[str, Any]]:
    """One key family per K (its b vectors and triggers do not depend on R); per R the
    exact curve and a freshly built table of that range."""
    ranges = (256, 1024, 4096, 8192) if quick else (256, 512, 1024, 2048, 4096, 8192, 16384)
    licensees = 50 if quick else 1000
    rows = []
    for k in (10, 100):
        base, family, triggers, _ = _release(k, licensees, DEFAULT_SHIFT_RANGE)
        bs = [key.b for key in family.keys]
        qs = [abs(tr.base_index(b) // k) for b in bs for tr in triggers]
        for r in ranges:
            scheme = CSLiteV2(k, base.width, r)
            lo, hi = scheme.index_range(triggers)
            t0 = time.perf_counter()
            table = new_label_table(scheme, family.pk.h, lo, hi)
            build_s = time.perf_counter() - t0
            curve = {n: requery_advantage(scheme, triggers, bs, n) for n in KS}
            row = {
                "num_classes": k,
                "width_n": scheme.width,
                "shift_range": r,
                "licensees": licensees,
                "table_entries": table.size,
                "table_mb": table.nbytes / 1e6,
                "table_build_s": build_s,
                "max_window_offset": int(max(qs)),
                "mean_window_offset": float(np.mean(qs)),
                "advantage_mean": {str(n): v[0] for n, v in curve.items()},
                "advantage_worst": {str(n): v[1] for n, v in curve.items()},
            }
            log.info(
                "K=%d R=%d n=%d: table %d entries %.1f MB (%.2f s); k=1 worst %.4f, "
                "k=16 mean %.4f worst %.4f, k=256 mean %.4f worst %.4f",
                k, r, scheme.width, row["table_entries"], row["table_mb"], build_s,
                curve[1][1], *curve[16], *curve[256],
            )  # fmt: skip
            rows.append(row)
    return rows


def _key(scheme: Any, pk: Any, sk: Any) -> LicenseeKey:
    names = tuple(f"c{i}" for i in range(scheme.num_classes))
    return LicenseeKey(scheme, "bench", pk, sk, names, "")


def detectors(quick: bool) -> dict[str, Any]:
    k = 10
    scheme, family, triggers, _ = _release(k, 20, DEFAULT_SHIFT_RANGE)
    classes = scheme.enc(family.pk, scheme.codec.messages(np.arange(k)))
    fakes = scheme.fake(family.pk, scheme.codec, triggers)
    out: dict[str, Any] = {"num_triggers": NUM_TRIGGERS, "shift_range": DEFAULT_SHIFT_RANGE}
    reps = 20 if quick else 60
    per_key = []
    for key_sk in family.keys[: 2 if quick else 3]:
        key = _key(scheme, family.pk, key_sk)
        labels = np.array(scheme.trigger_labels(key_sk.b, triggers))
        t_idx = np.tile(np.arange(NUM_TRIGGERS), reps)
        trig = scheme.to_wire(scheme.sampdist(family.pk, fakes[t_idx]))
        cls = scheme.to_wire(scheme.sampdist(family.pk, classes[labels[t_idx]]))
        ordinary = scheme.to_wire(scheme.sampdist(family.pk, classes[np.arange(k * reps) % k]))
        exact = MembershipDetector(key, known_windows=True)
        learned = MembershipDetector(key).fit(ordinary)
        row = {
            "membership_exact": advantage(exact.flags(trig), exact.flags(cls)),
            "membership_learned": advantage(learned.flags(trig), learned.flags(cls)),
            "labels_match": bool((learned.observe(trig)[0] == labels[t_idx]).all()),
        }
        for n in (16, 64):
            queries = 2 if quick else 4
            q_idx = np.repeat(np.tile(np.arange(NUM_TRIGGERS), queries), n)
            tw = scheme.to_wire(scheme.sampdist(family.pk, fakes[q_idx]))
            cw = scheme.to_wire(scheme.sampdist(family.pk, classes[labels[q_idx]]))
            det = RequeryDetector(exact)
            groups_t = [tw[i : i + n] for i in range(0, len(tw), n)]
            groups_c = [cw[i : i + n] for i in range(0, len(cw), n)]
            row[f"requery_k{n}"] = advantage(det.flags(groups_t), det.flags(groups_c))
            row[f"requery_k{n}_exact"] = requery_advantage(scheme, triggers, [key_sk.b], n)[0]
        per_key.append(row)
        log.info("v2 detectors, one key: %s", row)
    out["v2"] = per_key
    # format v1, the same membership detector: every Fake is flagged
    v1 = make_scheme("secure", k)
    fam1 = v1.gen(2)
    assert isinstance(v1.codec, HashLabelCodec)
    msgs = v1.codec.sample_messages(v1.group)
    c1 = v1.enc(fam1.pk, msgs)
    f1 = v1.fake(fam1.pk, NUM_TRIGGERS)
    key1 = _key(v1, fam1.pk, fam1.keys[1])
    det1 = MembershipDetector(key1).fit(v1.to_wire(v1.sampdist(fam1.pk, c1[np.arange(200) % k])))
    flags_t = det1.flags(v1.to_wire(v1.sampdist(fam1.pk, f1)))
    flags_c = det1.flags(v1.to_wire(v1.sampdist(fam1.pk, c1[np.arange(500) % k])))
    out["v1"] = {
        "triggers_flagged": int(flags_t.sum()),
        "num_triggers": NUM_TRIGGERS,
        "ordinary_flagged": int(flags_c.sum()),
        "num_ordinary": 500,
        "membership": advantage(flags_t, flags_c),
    }
    log.info("v1 membership detector: %s", out["v1"])
    return out


def cost(quick: bool) -> dict[str, Any]:
    """Per-row decrypt and SampDist time, v1 and v2 interleaved in one process."""
    k, n_rows = 10, 500 if quick else 2000
    v2, fam2, _triggers, _ = _release(k, 1000 if not quick else 50, DEFAULT_SHIFT_RANGE)
    v1 = make_scheme("secure", k)
    fam1 = v1.gen(2)
    assert isinstance(v1.codec, HashLabelCodec)
    book1 = v1.enc(fam1.pk, v1.codec.sample_messages(v1.group))
    book2 = v2.enc(fam2.pk, v2.codec.messages(np.arange(k)))
    slots = np.arange(n_rows) % k
    prep1, prep2 = v1.prepare_codebook(book1), v2.prepare_codebook(book2)
    w1 = [bytes(r) for r in v1.to_wire(v1.sampdist_codebook(fam1.pk, prep1, slots))]
    w2 = [bytes(r) for r in v2.to_wire(v2.sampdist_codebook(fam2.pk, prep2, slots))]
    times: dict[str, list[float]] = {"dec_v1": [], "dec_v2": [], "samp_v1": [], "samp_v2": []}
    for _ in range(3):
        for name, fn in (
            ("dec_v1", lambda: v1.decrypt_labels(fam1.keys[1], v1.from_wire(w1))),
            ("dec_v2", lambda: v2.decrypt_labels(fam2.keys[1], v2.from_wire(w2))),
            ("samp_v1", lambda: v1.sampdist_codebook(fam1.pk, prep1, slots)),
            ("samp_v2", lambda: v2.sampdist_codebook(fam2.pk, prep2, slots)),
        ):
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / n_rows * 1e6)
    best = {k_: float(min(v)) for k_, v in times.items()}
    out = {
        "rows": n_rows,
        "width_n": v2.width,
        "us_per_row": best,
        "decrypt_ratio_v2_over_v1": best["dec_v2"] / best["dec_v1"],
        "sampdist_ratio_v2_over_v1": best["samp_v2"] / best["samp_v1"],
        "backend": v2.group.backend,
    }
    log.info("cost: %s", out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer ranges, keys and samples")
    p.add_argument("--only", nargs="*", choices=("tradeoff", "detectors", "cost"), default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    only = set(args.only or ("tradeoff", "detectors", "cost"))
    result: dict[str, Any] = {"benchmark": "keyholder", "quick": args.quick, "env": env_info()}
    if "tradeoff" in only:
        result["tradeoff"] = tradeoff(args.quick)
    if "detectors" in only:
        result["detectors"] = detectors(args.quick)
    if "cost" in only:
        result["cost"] = cost(args.quick)
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
