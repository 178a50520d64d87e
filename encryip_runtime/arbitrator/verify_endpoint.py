"""``verify-endpoint``: is a live service ours, and whose deployment is it?

The arbitrator queries the suspect (Open Inference Protocol v2 over gRPC or REST, or
encryip.v1) with the vault's trigger inputs and a share of its labelled probe set, one
image per request, shuffled together, under a query budget and a rate limit. It reads
whatever comes back and decides with the statistics the file-based commands use:

* **raw outputs** (a leaked ONNX served plain: logits over the S outputs, or the
  argmax slot index) -> the very test of ``verify-onnx`` (``verify_onnx.decide``): the
  fingerprint under each licensee's output order, and slot recovery from the probes;
* **plain labels** (class indices, class names, or K class scores: a service that
  decrypts with its key) -> ``verify-labels`` (Eqn. 5, ``verify_labels.decide_labels``);
* **confused labels** (our ciphertexts) -> the arbitrator decrypts them with the
  vault's keys. Each trigger's answer must decrypt to exactly its Fake's message: under
  H0 (a service unrelated to the vault's secrets) that element is uniform and
  independent of the answer, so each trigger matches with probability 1/|G|: a binomial
  tail, as in verify-labels but per element instead of per label. Every licensee's key
  decrypts such a service alike (the served function of all variants is the same by
  design), so the licensee is named from the manifest the service reports it serves
  (encryip.v1 model info, v2 REST model metadata), matched against the release's
  variant manifests.

The verdict's JSON is the evidence: every query (what was sent, when, how long it took,
the answer as received), the endpoint's metadata, and the inner decision.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.arbitrator import stats
from encryip_runtime.arbitrator.endpoint import (
    EndpointError,
    Output,
    TlsOptions,
    Transport,
    open_transport,
)
from encryip_runtime.arbitrator.errors import ArbitrationInputError
from encryip_runtime.arbitrator.inputs import check_alpha, load_vault_with_arrays
from encryip_runtime.arbitrator.verify_labels import decide_labels
from encryip_runtime.arbitrator.verify_onnx import decide as decide_outputs
from encryip_runtime.crypto.profiles import profile_of
from encryip_runtime.crypto.scheme_v2 import CSLiteV2
from encryip_runtime.exceptions import EncodingError, EncryIPError
from encryip_runtime.formats.common import pk_to_json
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.formats.vault import Vault, VaultArrays

__all__ = ["EndpointVerdict", "QueryRecord", "verify_endpoint"]

log = logging.getLogger(__name__)

DEFAULT_MAX_QUERIES = 1000
DEFAULT_PROBES = 256
DEFAULT_QPS = 20.0
# Consecutive failed queries after which the endpoint is declared unusable (exit 2).
MAX_CONSECUTIVE_FAILURES = 5

NULL_CIPHERTEXTS = (
    "H0: the service's answers are independent of the vault's secrets; the message a trigger's "
    "Fake ciphertext carries is then uniform over the group, so an answer decrypts to it "
    "with probability 1/|G| per trigger"
)


@dataclass(frozen=True)
class QueryRecord:
    index: int
    kind: str  # "trigger" | "probe"
    item: int  # index into the vault's trigger inputs or probe set
    sent_unix: float
    seconds: float
    reading: str  # how the answer was read: ciphertext | label | slot | logits | scores | error
    answer: list[dict[str, Any]] | None = None
    error: str | None = None


@dataclass(frozen=True)
class EndpointVerdict(stats.PValue):
    url: str
    protocol: str
    model: str
    vault: str
    profile: str
    answers: str  # confused-labels | plain-labels | raw-outputs
    owned: bool
    licensee: str | None
    attribution: str
    log10_p_value: float
    alpha: float
    num_triggers: int
    probes_sent: int
    queries_sent: int
    failed_queries: int
    started_unix: float
    seconds: float
    summary: str
    decision: dict[str, Any]
    endpoint: dict[str, Any]
    notes: tuple[str, ...] = ()
    queries: tuple[QueryRecord, ...] = field(default=(), repr=False)

    @property
    def exit_code(self) -> int:
        return 0 if self.owned else 1

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc = {"command": "verify-endpoint", **doc, "p_value": self.p_value}
        doc["notes"] = list(self.notes)
        doc["queries"] = [asdict(q) for q in self.queries]
        if math.isinf(doc["log10_p_value"]):
            doc["log10_p_value"] = None
        return doc


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Reading:
    kind: str  # ciphertext | label | slot | logits | scores | garbage
    value: Any = None
    why: str = ""


def _read_answer(outputs: list[Output], vault: Vault, output_name: str | None) -> _Reading:
    """What one answer (one input row) is, judged against the release in the vault."""
    if not outputs:
        return _Reading("garbage", why="no output tensor")
    if output_name is not None:
        chosen = [o for o in outputs if o.name == output_name]
        if not chosen:
            names = ", ".join(repr(o.name) for o in outputs)
            return _Reading("garbage", why=f"no output {output_name!r} (got {names})")
        out = chosen[0]
    else:
        out = outputs[0]
    vals = out.values
    if not vals:
        return _Reading("garbage", why=f"output {out.name!r} is empty")
    k, s = vault.num_classes, vault.output_size
    if all(isinstance(v, bytes) for v in vals):
        if len(vals) != 1:
            return _Reading("garbage", why=f"{len(vals)} BYTES elements for one input row")
        return _read_bytes(vals[0], vault, out.json_strings)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        arr = np.asarray(vals, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            return _Reading("garbage", why="non-finite numbers")
        if len(arr) == s and s > 1:
            return _Reading("logits", arr.astype(np.float32))
        if len(arr) == k and k > 1:
            return _Reading("scores", int(np.argmax(arr)))
        if len(arr) == 1 and float(arr[0]).is_integer():
            v = int(arr[0])
            if 0 <= v < k:
                return _Reading("label", v)
            if 0 <= v < s:
                return _Reading("slot", v)
        return _Reading(
            "garbage",
            why=f"{len(arr)} numbers: neither a label in [0, {k}), a slot in [0, {s}), "
            f"{k} class scores nor {s} logits of this release",
        )
    return _Reading("garbage", why=f"mixed value types in output {out.name!r}")


def _read_bytes(raw: bytes, vault: Vault, json_string: bool) -> _Reading:
    width = vault.scheme.ciphertext_size
    text: str | None = None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    names = {n: i for i, n in enumerate(vault.class_names)}
    if text is not None and text.strip() in names:
        return _Reading("label", names[text.strip()])
    if text is not None and text.strip().isdigit():
        v = int(text.strip())
        if 0 <= v < vault.num_classes:
            return _Reading("label", v)
    candidate: bytes | None = None
    if len(raw) == width and not (json_string and text is not None and _is_hex(text)):
        candidate = raw
    elif text is not None and len(text) == 2 * width and _is_hex(text):
        candidate = bytes.fromhex(text)  # hex in JSON (our REST), or hex sent as bytes
    if candidate is not None:
        try:
            vault.scheme.from_wire([candidate])
        except EncodingError as exc:
            return _Reading("garbage", why=f"{width} bytes that are no valid ciphertext ({exc})")
        return _Reading("ciphertext", candidate)
    shown = text[:40] if text is not None else raw[:20].hex()
    return _Reading(
        "garbage",
        why=f"BYTES {shown!r} ({len(raw)} bytes): neither a class name, a label nor a "
        f"{width}-byte ciphertext of this release",
    )


def _is_hex(text: str) -> bool:
    return len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text)


# ----------------------------------------------------------------------------- querying


def _plan(
    vault: Vault, arrays: VaultArrays, max_queries: int, probes: int
) -> list[tuple[str, int]]:
    t = vault.num_triggers
    if t > max_queries:
        raise ArbitrationInputError(
            f"--max-queries {max_queries} is below the vault's {t} triggers: every trigger "
            "must be sent once"
        )
    n_probes = min(len(arrays.probe_labels), max_queries - t, probes)
    rng = secrets.SystemRandom()
    chosen = sorted(rng.sample(range(len(arrays.probe_labels)), n_probes))
    plan = [("trigger", i) for i in range(t)] + [("probe", i) for i in chosen]
    rng.shuffle(plan)  # triggers hidden among ordinary inputs, in no fixed order
    return plan


def _query_all(
    transport: Transport,
    plan: list[tuple[str, int]],
    arrays: VaultArrays,
    qps: float,
) -> list[tuple[QueryRecord, list[Output] | None]]:
    out: list[tuple[QueryRecord, list[Output] | None]] = []
    interval = 1.0 / qps if qps > 0 else 0.0
    start = time.monotonic()
    consecutive = 0
    for n, (kind, item) in enumerate(plan):
        wait = start + n * interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        x = arrays.trigger_inputs[item] if kind == "trigger" else arrays.probe_inputs[item]
        x = np.ascontiguousarray(x[None, ...], dtype=np.uint8)
        sent = time.time()
        t0 = time.perf_counter()
        try:
            outputs: list[Output] | None = transport.infer(x, f"q{n}")
            error = None
        except EndpointError as exc:
            outputs, error = None, str(exc)
        seconds = time.perf_counter() - t0
        rec = QueryRecord(
            n, kind, item, sent, seconds, "error" if error else "",
            None if outputs is None else [o.to_json() for o in outputs], error,
        )  # fmt: skip
        out.append((rec, outputs))
        if error is not None:
            consecutive += 1
            log.info("query %d failed: %s", n, error)
            if consecutive >= MAX_CONSECUTIVE_FAILURES:
                raise EndpointError(
                    f"{MAX_CONSECUTIVE_FAILURES} queries in a row failed; last: {error}"
                )
        else:
            consecutive = 0
    return out


# ----------------------------------------------------------------------------- decisions


def _one_hot(slot: int, size: int) -> npt.NDArray[np.float32]:
    row = np.zeros(size, dtype=np.float32)
    row[slot] = 1.0
    return row


def _decide_raw(
    vault: Vault, arrays: VaultArrays, readings: dict[tuple[str, int], _Reading], alpha: float,
    url: str, vault_name: str,
) -> tuple[bool, str | None, str, float, str, dict[str, Any], list[str]]:  # fmt: skip
    s = vault.output_size
    rows: dict[tuple[str, int], npt.NDArray[np.float32]] = {}
    for key, r in readings.items():
        rows[key] = r.value if r.kind == "logits" else _one_hot(int(r.value), s)
    missing = [i for i in range(vault.num_triggers) if ("trigger", i) not in rows]
    if missing:
        raise ArbitrationInputError(
            f"{len(missing)} of {vault.num_triggers} triggers got no usable answer "
            f"(first: trigger {missing[0]}); raw outputs need every trigger's answer"
        )
    slots_describe_outputs = profile_of(vault.scheme).uses_codebook
    if not slots_describe_outputs and any(r.kind == "slot" for r in readings.values()):
        raise ArbitrationInputError(
            "a single slot index cannot describe the paper profile's three one-hot blocks; "
            "the endpoint must return the raw outputs"
        )
    lt = np.stack([rows[("trigger", i)] for i in range(vault.num_triggers)])
    probe_items = sorted(i for kind, i in rows if kind == "probe")
    lp = (
        np.stack([rows[("probe", i)] for i in probe_items])
        if probe_items
        else np.zeros((0, s), dtype=np.float32)
    )
    sub = replace(
        arrays,
        probe_inputs=arrays.probe_inputs[probe_items],
        probe_labels=arrays.probe_labels[probe_items],
    )
    v = decide_outputs(vault, sub, lt, lp, alpha, url, vault_name)
    return (
        v.owned,
        v.licensee,
        v.attribution,
        v.log10_p_value,
        v.summary,
        v.to_json(),
        list(v.notes),
    )


def _decide_labels(
    vault: Vault, arrays: VaultArrays, readings: dict[tuple[str, int], _Reading], alpha: float,
    url: str, vault_name: str,
) -> tuple[bool, str | None, str, float, str, dict[str, Any], list[str]]:  # fmt: skip
    observed: list[int | None] = [
        int(readings[("trigger", i)].value) if ("trigger", i) in readings else None
        for i in range(vault.num_triggers)
    ]
    v = decide_labels(vault, observed, alpha, url, vault_name)
    notes = []
    probe = [(int(r.value), int(arrays.probe_labels[i])) for (k, i), r in readings.items()
             if k == "probe"]  # fmt: skip
    if probe:
        acc = float(np.mean([a == b for a, b in probe]))
        notes.append(f"probe accuracy of the plain labels: {acc:.3f} on {len(probe)} probes")
    attribution = "licensee" if v.proven else "none"
    return v.proven, v.licensee, attribution, v.log10_p_value, v.summary, v.to_json(), notes


def _variant_digests(vault: Vault, release: Path) -> dict[str, str]:
    """manifest digest -> "base" or a licensee name, for the manifests found in ``release``."""
    out: dict[str, str] = {}
    candidates = [("base", release / "manifest.json")]
    candidates += [(r.name, release / "licensees" / r.name / "manifest.json") for r in
                   vault.licensees]  # fmt: skip
    for who, path in candidates:
        if path.is_file():
            try:
                m = Manifest.load(path)
            except EncryIPError as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            if m.pk == vault.pk:
                out[m.digest] = who
    return out


def _same_rows(gen: Vault, got: Any, want: Any) -> npt.NDArray[np.bool_]:
    """Per row: is ``got`` a re-randomisation of ``want``? Format 1: the same message under
    the root key. Format 2 (the runtime also shifts the message index by K·m): the same
    trapdoor view (``owner_signatures``: each Fake's offsets and the label)."""
    if isinstance(gen.scheme, CSLiteV2):
        family = gen.family_v2()
        a = gen.scheme.owner_signatures(family, got)
        b = gen.scheme.owner_signatures(family, want)
        return np.array([x == y for x, y in zip(a, b, strict=True)], dtype=bool)
    g, root = gen.scheme.group, gen.family().root
    return np.all(
        g.to_bytes(gen.scheme.dec(root, got)) == g.to_bytes(gen.scheme.dec(root, want)), axis=1
    )


def _decide_ciphertexts(
    vault: Vault, arrays: VaultArrays, readings: dict[tuple[str, int], _Reading], alpha: float,
    transport: Transport, release: Path | None, vault_path: Path,
) -> tuple[bool, str | None, str, float, str, dict[str, Any], list[str]]:  # fmt: skip
    scheme = vault.scheme
    g = scheme.group
    trig = [i for i in range(vault.num_triggers) if ("trigger", i) in readings]
    if not trig:
        raise ArbitrationInputError("no trigger got a usable answer")
    cts = scheme.from_wire([readings[("trigger", i)].value for i in trig])
    # Every key generation is a candidate (a deployment leaked before a rotation still
    # serves the old codebook): Bonferroni over the generations.
    gens = vault.generations()
    by_gen = [(int(np.sum(_same_rows(gen, cts, gen.trigger_ciphertexts[trig]))), gen)
              for gen in gens]  # fmt: skip
    hits, matched = max(by_gen, key=lambda hg: hg[0])
    root = matched.family().root
    t = len(trig)
    q = 1.0 / g.order
    correction = math.log10(len(gens))
    log10_a = math.log10(alpha)
    min_hits = stats.min_count_for(
        lambda h: correction + stats.binomial_tail_log10(t, h, q), t, log10_a
    )
    if min_hits is None:
        raise ArbitrationInputError(
            f"{t} answered triggers cannot reach alpha = {alpha:g} even if all matched"
        )
    log10_p = min(0.0, correction + stats.binomial_tail_log10(t, hits, q))
    owned = log10_p < log10_a
    per_key = []
    expected_labels = matched.expected_trigger_labels()
    for r in matched.licensees:
        labels = scheme.decrypt_labels(r.sk, cts)
        expected = expected_labels[r.name][trig]
        per_key.append({"licensee": r.name, "trigger_labels_as_its_key_expects":
                        int(np.sum(labels == expected)), "answered_triggers": t})  # fmt: skip
    probe_items = [i for kind, i in readings if kind == "probe"]
    probe_acc = None
    if probe_items:
        pl = scheme.decrypt_labels(root, scheme.from_wire([readings[("probe", i)].value
                                                           for i in probe_items]))  # fmt: skip
        probe_acc = float(np.mean(pl == arrays.probe_labels[probe_items]))
    notes = [
        "every licensee's key decrypts the answers alike: all variants serve the same "
        "function, so the answers prove ownership, not whose deployment it is"
    ]
    info = transport.metadata.get("model_info") or {}
    served_digests = set(transport.metadata.get("answer_manifest_digests", []))
    if info.get("manifest_digest"):
        served_digests.add(str(info["manifest_digest"]))
    # v2 REST model metadata: our server reports the manifest in its parameters
    model_meta = transport.metadata.get("model")
    params = model_meta.get("parameters") if isinstance(model_meta, dict) else None
    if isinstance(params, dict) and isinstance(params.get("manifest_digest"), str):
        served_digests.add(params["manifest_digest"])
    release_dir = release if release is not None else vault_path.parent
    known = _variant_digests(matched, release_dir)
    named = sorted({known[d] for d in served_digests if d in known})
    served_pk = info.get("pk")
    if served_pk:
        same = {k: str(v) for k, v in pk_to_json(scheme, matched.pk).items()} == served_pk
        notes.append(
            f"the public key the service reports is key generation {matched.generation}'s"
            if same
            else "the public key the service reports is not the matched generation's "
            "(a re-keyed copy?)"
        )
    if owned and matched.generation != vault.generation:
        notes.append(
            f"the answers are under key generation {matched.generation} of "
            f"{vault.generation}: a deployment from before a rotation"
        )
    licensee: str | None = None
    attribution = "none"
    if owned and len(named) == 1 and named[0] != "base":
        licensee, attribution = named[0], "licensee"
        how = f"; it reports serving licensee {licensee!r}'s manifest (digest match)"
    elif owned and named == ["base"]:
        attribution = "base"
        how = "; it reports serving the base manifest"
    elif owned:
        attribution = "owned-unnamed"
        how = (
            "; the manifest it reports is none of the release's variants"
            if served_digests
            else "; it reports no manifest to name a licensee by"
        )
    else:
        how = ""
    summary = (
        f"owned: {hits} of {t} trigger answers decrypt to exactly their Fake's message{how}"
        if owned
        else f"not proven: {hits} of {t} trigger answers decrypt to their Fake's message"
    )
    decision = {
        "test": "exact trigger decryption (confused labels)",
        "null": NULL_CIPHERTEXTS,
        "generation": matched.generation,
        "current_generation": vault.generation,
        "trigger_hits": hits,
        "answered_triggers": t,
        "min_trigger_hits": min_hits,
        "chance_per_trigger": q,
        "log10_p_value": None if math.isinf(log10_p) else log10_p,
        "p_value": stats.to_p(log10_p),
        "probe_accuracy": probe_acc,
        "per_key": per_key,
        "served_manifest_digests": sorted(served_digests),
        "release_manifests": {v: d for d, v in known.items()},
        "release_dir": str(release_dir),
    }
    return owned, licensee, attribution, log10_p, summary, decision, notes


# ----------------------------------------------------------------------------- entry


def verify_endpoint(
    url: str,
    vault_path: str | Path,
    *,
    model: str | None = None,
    alpha: float = 1e-6,
    max_queries: int = DEFAULT_MAX_QUERIES,
    probes: int = DEFAULT_PROBES,
    qps: float = DEFAULT_QPS,
    timeout_s: float = 10.0,
    tls: TlsOptions | None = None,
    output_name: str | None = None,
    release: str | Path | None = None,
    protocol: str = "auto",
) -> EndpointVerdict:
    """Query the suspect endpoint and decide (see the module doc).

    Raises ``EncryIPError`` (exit 2 in the CLI) when no decision can be made: the
    endpoint is unreachable, refuses, times out repeatedly, or answers nothing this
    release could have produced.
    """
    alpha = check_alpha(alpha)
    if max_queries < 1:
        raise ArbitrationInputError(f"--max-queries must be at least 1 (got {max_queries})")
    if qps <= 0 or math.isnan(qps):
        raise ArbitrationInputError(f"--qps must be positive (got {qps})")
    if probes < 0:
        raise ArbitrationInputError(f"--probes must not be negative (got {probes})")
    vault, arrays, vpath = load_vault_with_arrays(Path(vault_path))
    plan = _plan(vault, arrays, max_queries, probes)
    started = time.time()
    t0 = time.perf_counter()
    transport = open_transport(url, model, tls or TlsOptions(), timeout_s, protocol)
    try:
        results = _query_all(transport, plan, arrays, qps)
    finally:
        transport.close()
    records: list[QueryRecord] = []
    readings: dict[tuple[str, int], _Reading] = {}
    garbage: list[str] = []
    for rec, outputs in results:
        if outputs is None:
            records.append(rec)
            continue
        r = _read_answer(outputs, vault, output_name)
        records.append(replace(rec, reading=r.kind))
        if r.kind == "garbage":
            garbage.append(f"query {rec.index}: {r.why}")
        else:
            readings[(rec.kind, rec.item)] = r
    answered = len(results) - sum(1 for rec, o in results if o is None)
    if garbage and len(garbage) * 2 >= answered:
        raise EndpointError(
            f"{transport.url}: {len(garbage)} of {answered} answers are nothing this release "
            f"could produce; first: {garbage[0]}"
        )
    kinds = {r.kind for r in readings.values()}
    notes = [f"{len(garbage)} answers unreadable, skipped (first: {garbage[0]})"] if garbage else []
    if not kinds:
        raise EndpointError(f"{transport.url}: no query got an answer")
    vname = str(vpath)
    if kinds <= {"ciphertext"}:
        answers = "confused-labels"
        decided = _decide_ciphertexts(
            vault, arrays, readings, alpha, transport,
            None if release is None else Path(release), vpath,
        )  # fmt: skip
    elif kinds <= {"logits", "slot", "label"} and kinds & {"logits", "slot"}:
        # a slot index below K reads as a label; with logits or other slots it is a slot
        answers = "raw-outputs"
        if "logits" in kinds and kinds - {"logits"}:
            raise EndpointError(f"{transport.url}: answers mix logits with single indices")
        decided = _decide_raw(vault, arrays, readings, alpha, str(transport.url), vname)
    elif kinds <= {"label", "scores"}:
        answers = "plain-labels"
        decided = _decide_labels(vault, arrays, readings, alpha, str(transport.url), vname)
    else:
        raise EndpointError(
            f"{transport.url}: the answers mix kinds ({', '.join(sorted(kinds))}); "
            "pass --output NAME to pick one output tensor"
        )
    owned, licensee, attribution, log10_p, summary, decision, more = decided
    failed = sum(1 for rec, o in results if o is None)
    metadata = dict(transport.metadata)
    if "answer_manifest_digests" in metadata:
        metadata["answer_manifest_digests"] = sorted(metadata["answer_manifest_digests"])
    return EndpointVerdict(
        url=str(transport.url),
        protocol=transport.protocol,
        model=transport.model,
        vault=vname,
        profile=vault.profile,
        answers=answers,
        owned=owned,
        licensee=licensee,
        attribution=attribution,
        log10_p_value=log10_p,
        alpha=alpha,
        num_triggers=vault.num_triggers,
        probes_sent=sum(1 for k, _ in plan if k == "probe"),
        queries_sent=len(results),
        failed_queries=failed,
        started_unix=started,
        seconds=time.perf_counter() - t0,
        summary=summary,
        decision=decision,
        endpoint={"metadata": metadata},
        notes=tuple(notes + more),
        queries=tuple(records),
    )
