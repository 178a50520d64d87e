"""``verify-onnx``: is a suspect ONNX file ours, and whose copy is it?

Two tests, each with its own null hypothesis (docs/arbitrator.md):

1. **Fingerprint test (exact).** For every candidate output order (the base model,
   each licensee's secret permutation, and the order a ``--manifest`` describes),
   undo the order and count the triggers that produce exactly their own ``Fake``
   ciphertext. Null H0: the file was made without this vault's secrets, so the
   secret slot order / Fake ciphertexts / licensee permutations are independent of
   it. The bound rests only on how the owner drew those secrets.
2. **Slot recovery (survives a consistent re-permutation).** Recover the suspect's
   own output order from the labelled probe set, then count triggers consistent with
   it. secure: triggers landing on distinct non-class outputs, bounded under the
   null "each trigger's argmax is uniform over the S outputs" (a modelling
   assumption, weaker than 1); paper: triggers whose three blocks agree with the
   positions the probes revealed, bounded exactly from the secret Fake draws.

3. **Weight fingerprint (survives any consistent re-permutation).** Each licensee's
   file carries a secret perturbation of its inner weights (release/fingerprint.py).
   The suspect's hidden units are aligned to the base model's (beside the vault), the
   residual is correlated with every licensee's perturbation: z_j ~ N(0, 1) exactly
   under H0 "made without licensee j's seed". Run when the base model is found and
   the suspect has the base model's weight shapes.

The overall p-value is Bonferroni over the tests run and all candidates.

Key generations: ``keys rotate`` keeps each licensee's file (and so its output
order) and re-encrypts the codebook; the candidates are the orders of every
generation the vault keeps, each naming the generations it belongs to, and a
``--manifest`` of any generation is matched to the generation whose public key it
carries.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.arbitrator import stats
from encryip_runtime.arbitrator.errors import ArbitrationInputError
from encryip_runtime.arbitrator.inputs import SuspectModel, check_alpha, load_vault_with_arrays
from encryip_runtime.crypto.profiles import profile_of
from encryip_runtime.crypto.scheme_v2 import CSLiteV2
from encryip_runtime.exceptions import ModelError
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.formats.vault import Vault, VaultArrays
from encryip_runtime.release.fingerprint import (
    Fingerprint,
    align_to_base,
    fingerprint_z,
    inner_weights,
    normal_tail_log10,
)
from encryip_runtime.release.writer import record_fingerprint
from encryip_runtime.transfer import OneHotTransfer

__all__ = [
    "CandidateEvidence",
    "OnnxVerdict",
    "SlotRecovery",
    "WeightEvidence",
    "WeightMatch",
    "verify_onnx",
    "weight_evidence",
]

log = logging.getLogger(__name__)

NUM_TESTS = 2  # fingerprint + slot recovery: Bonferroni over both (3 with the weight test)

NULL_FINGERPRINT = (
    "H0: the suspect was made without this vault's secrets (its outputs are independent of "
    "the secret slot order, the Fake ciphertexts and the licensee permutations)"
)
NULL_RECOVERY_SECURE = (
    "H0': on each secret trigger input, an unrelated model's argmax falls on each of the "
    "S outputs with probability 1/S, independently (a modelling assumption)"
)
NULL_WEIGHTS = (
    "H0: the suspect was made without licensee j's secret weight seed, so that seed's "
    "N(0, I) noise is independent of the suspect's aligned residual and z_j ~ N(0, 1) (exact)"
)
NULL_RECOVERY_PAPER = (
    "H0: the Fake ciphertexts are independent of the suspect and of the positions the "
    "probe set reveals (exact: bounded from how Fake draws u1, u2, u3)"
)


@dataclass(frozen=True)
class CandidateEvidence(stats.PValue):
    """One candidate output order, undone before counting."""

    name: str  # "base", a licensee name, or "manifest"
    kind: str  # "base" | "licensee" | "manifest"
    trigger_hits: int
    num_triggers: int
    probe_accuracy: float | None  # decrypted probe accuracy after undoing this order
    log10_p_value: float  # this candidate alone, before the multiplicity correction
    manifest_agrees: bool = False  # the --manifest describes this very order
    #: the key generations in which this order was issued (a licensee keeps its file
    #: across rotations, so usually all of them)
    generations: tuple[int, ...] = ()


@dataclass(frozen=True)
class SlotRecovery(stats.PValue):
    """Test 2: the suspect's order recovered from the probe set."""

    method: str
    null: str
    consistent_triggers: int
    num_triggers: int
    probe_accuracy: float | None  # probes on their class's recovered output(s)
    usable: bool  # False when the probes reveal no consistent class order
    log10_p_value: float
    detail: str = ""


@dataclass(frozen=True)
class WeightMatch:
    name: str
    z: float
    log10_p_value: float  # this licensee alone, before the multiplicity correction


@dataclass(frozen=True)
class WeightEvidence:
    """Test 3: the suspect's inner weights against every licensee's fingerprint."""

    null: str
    num_weights: int  # fingerprinted weights compared
    realigned_layers: int  # layers whose hidden units had to be re-ordered
    licensees: tuple[WeightMatch, ...]
    detail: str = ""

    def best(self) -> WeightMatch | None:
        return min(self.licensees, key=lambda m: m.log10_p_value) if self.licensees else None


@dataclass(frozen=True)
class OnnxVerdict(stats.PValue):
    suspect: str
    vault: str
    profile: str
    owned: bool
    licensee: str | None
    attribution: str  # licensee | base | re-permuted | ambiguous | none
    log10_p_value: float
    alpha: float
    min_trigger_hits: int  # hits one candidate needs for p < alpha
    num_triggers: int
    num_probes: int
    output_size: int
    candidates: tuple[CandidateEvidence, ...]
    slot_recovery: SlotRecovery
    null: str
    summary: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: the generation whose public key the --manifest carries (None without one)
    manifest_generation: int | None = None
    current_generation: int = 1
    #: test 3 (None when not run: no fingerprints, no base model, other weight shapes)
    weights: WeightEvidence | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.owned else 1

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["p_value"] = self.p_value
        doc["command"] = "verify-onnx"
        for c, obj in zip(doc["candidates"], self.candidates, strict=True):
            c["p_value"] = obj.p_value
        doc["slot_recovery"]["p_value"] = self.slot_recovery.p_value
        doc["notes"] = list(self.notes)
        doc["candidates"] = list(doc["candidates"])
        return _finite(doc)


def _finite(obj: Any) -> Any:
    """JSON has no -inf / NaN: a log10 p of -inf (probability 0), or an undefined z, is null."""
    if isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- profiles


class _Profile:
    """What differs between the profiles: decoding, hits, the per-candidate bound."""

    def __init__(self, vault: Vault):
        self.vault = vault
        self.t = vault.num_triggers
        self.s = vault.output_size
        self.root_sk = vault.family().root

    def fingerprint_log10(self, hits: int) -> float:
        raise NotImplementedError

    def evidence(
        self,
        perm: npt.NDArray[np.int64],
        lt: npt.NDArray[Any],
        lp: npt.NDArray[Any],
        labels: npt.NDArray[np.int64],
    ) -> tuple[int, float | None]:
        raise NotImplementedError

    def recover(
        self, lt: npt.NDArray[Any], lp: npt.NDArray[Any], labels: npt.NDArray[np.int64]
    ) -> SlotRecovery:
        raise NotImplementedError


class _Secure(_Profile):
    def __init__(self, vault: Vault):
        super().__init__(vault)
        assert vault.class_slots is not None and vault.trigger_slots is not None
        self.class_slots = np.asarray(vault.class_slots, dtype=np.int64)
        self.trigger_slots = np.asarray(vault.trigger_slots, dtype=np.int64)
        self.slot_class = np.full(self.s, -1, dtype=np.int64)
        self.slot_class[self.class_slots] = np.arange(vault.num_classes)

    def fingerprint_log10(self, hits: int) -> float:
        return stats.slot_fingerprint_log10(self.t, self.s, hits)

    def evidence(
        self, perm: npt.NDArray[np.int64], lt: npt.NDArray[Any], lp: npt.NDArray[Any],
        labels: npt.NDArray[np.int64],
    ) -> tuple[int, float | None]:  # fmt: skip
        hits = int(np.sum(perm[np.argmax(lt, axis=1)] == self.trigger_slots)) if self.t else 0
        acc = None
        if len(lp):
            acc = float(np.mean(self.slot_class[perm[np.argmax(lp, axis=1)]] == labels))
        return hits, acc

    def recover(
        self, lt: npt.NDArray[Any], lp: npt.NDArray[Any], labels: npt.NDArray[np.int64]
    ) -> SlotRecovery:
        k = self.vault.num_classes
        method = "class outputs from the probe set; triggers on distinct other outputs"
        pos = _majority_positions(np.argmax(lp, axis=1), labels, k) if len(lp) else {}
        acc = (
            float(
                np.mean(
                    [
                        pos.get(int(y), -1) == int(a)
                        for y, a in zip(labels, np.argmax(lp, axis=1), strict=True)
                    ]
                )
            )
            if len(lp)
            else None
        )
        distinct = len(set(pos.values())) == len(pos) == k
        if not distinct or acc is None or acc < 0.5:
            return SlotRecovery(
                method,
                NULL_RECOVERY_SECURE,
                0,
                self.t,
                acc,
                False,
                0.0,
                "the probe set does not reveal K distinct class outputs (probe accuracy "
                f"{'n/a' if acc is None else f'{acc:.2f}'}): not a classifier of this task",
            )
        taken = set(pos.values())
        free = self.s - len(taken)
        landed = {int(a) for a in np.argmax(lt, axis=1) if int(a) not in taken}
        h = len(landed)
        return SlotRecovery(
            method,
            NULL_RECOVERY_SECURE,
            h,
            self.t,
            acc,
            True,
            stats.occupancy_tail_log10(self.t, free, self.s, h),
            f"{h} of {self.t} triggers on distinct outputs among the {free} non-class outputs",
        )


class _Paper(_Profile):
    def __init__(self, vault: Vault):
        super().__init__(vault)
        self.p = self.s // 3
        self.n = vault.scheme.group.order  # p - 1 elements per block
        self.phi_n = _euler_phi(self.n)
        self.trig = np.asarray(vault.trigger_ciphertexts, dtype=np.int64)
        self.cls = np.asarray(vault.class_ciphertexts, dtype=np.int64)
        # Fake: (r1, r2) uniform over pairs with r2 - r1 a unit mod n, u3 uniform: any
        # fixed ciphertext is hit with probability <= 1 / (n * phi(n) * n).
        self.q_hit = 1.0 / (self.n * self.phi_n * self.n)

    def fingerprint_log10(self, hits: int) -> float:
        return stats.binomial_tail_log10(self.t, hits, self.q_hit)

    def evidence(
        self, perm: npt.NDArray[np.int64], lt: npt.NDArray[Any], lp: npt.NDArray[Any],
        labels: npt.NDArray[np.int64],
    ) -> tuple[int, float | None]:  # fmt: skip
        tr = OneHotTransfer(self.p, perm)
        hits = int(np.sum(np.all(tr.phi_inv(lt) == self.trig, axis=1))) if self.t else 0
        acc = None
        if len(lp):
            got = self.vault.scheme.decrypt_labels(self.root_sk, tr.phi_inv(lp))
            acc = float(np.mean(got == labels))
        return hits, acc

    def recover(
        self, lt: npt.NDArray[Any], lp: npt.NDArray[Any], labels: npt.NDArray[np.int64]
    ) -> SlotRecovery:
        """Within-block re-permutation: each block's positions are recovered separately."""
        method = "positions within each block from the probe set; triggers checked against them"
        k, p, n = self.vault.num_classes, self.p, self.n
        if not len(lp):
            return SlotRecovery(
                method,
                NULL_RECOVERY_PAPER,
                0,
                self.t,
                None,
                False,
                0.0,
                "no probe set in the vault",
            )
        lp3 = lp.reshape(len(lp), 3, p)
        lt3 = lt.reshape(len(lt), 3, p)
        allowed: list[list[set[int]]] = []  # per block, per suspect position: values it may carry
        on_class = np.ones(len(lp), dtype=bool)
        for b in range(3):
            arg = np.argmax(lp3[:, b, :], axis=1)
            pos = _majority_positions(arg, labels, k)
            on_class &= np.array(
                [pos.get(int(y), -1) == int(a) for y, a in zip(labels, arg, strict=True)]
            )
            values: dict[int, set[int]] = {}
            for y, s in pos.items():
                values.setdefault(s, set()).add(int(self.cls[y, b]))
            class_values = {int(v) for v in self.cls[:, b]}
            unknown = set(range(1, n + 1)) - class_values
            per_pos = []
            for s in range(p):
                if s in values:
                    per_pos.append(values[s] if len(values[s]) == 1 else set())
                else:
                    per_pos.append(unknown)
            allowed.append(per_pos)
        acc = float(np.mean(on_class))
        if acc < 0.5:
            return SlotRecovery(
                method,
                NULL_RECOVERY_PAPER,
                0,
                self.t,
                acc,
                False,
                0.0,
                f"probe accuracy {acc:.2f} on the recovered positions: "
                "not a classifier of this task",
            )
        qs: list[float] = []
        consistent = 0
        for i in range(self.t):
            sets = [allowed[b][int(np.argmax(lt3[i, b]))] for b in range(3)]
            qs.append(len(sets[0]) / n * min(1.0, len(sets[1]) / self.phi_n) * len(sets[2]) / n)
            consistent += all(int(self.trig[i, b]) in sets[b] for b in range(3))
        return SlotRecovery(
            method,
            NULL_RECOVERY_PAPER,
            consistent,
            self.t,
            acc,
            True,
            stats.poisson_binomial_tail_log10(qs, consistent),
            f"{consistent} of {self.t} triggers consistent with the recovered positions "
            f"(chance per trigger <= {max(qs) if qs else 0:.3g})",
        )


def _euler_phi(n: int) -> int:
    result, m, d = n, n, 2
    while d * d <= m:
        if m % d == 0:
            while m % d == 0:
                m //= d
            result -= result // d
        d += 1
    if m > 1:
        result -= result // m
    return result


def _majority_positions(
    argmax: npt.NDArray[np.int64], labels: npt.NDArray[np.int64], k: int
) -> dict[int, int]:
    """For each class with probes: the output its probes land on most often."""
    out: dict[int, int] = {}
    for y in range(k):
        sel = argmax[labels == y]
        if len(sel):
            vals, counts = np.unique(sel, return_counts=True)
            out[y] = int(vals[np.argmax(counts)])
    return out


# ----------------------------------------------------------------------------- candidates


def _manifest_order(vault: Vault, manifest_path: Path) -> tuple[npt.NDArray[np.int64], int]:
    """(suspect output k -> base output, the key generation), as the manifest describes it."""
    m = Manifest.load(manifest_path)
    if m.profile != vault.profile or m.num_classes != vault.num_classes:
        raise ArbitrationInputError(
            f"{manifest_path}: profile {m.profile}/{m.num_classes} classes, but the vault is "
            f"{vault.profile}/{vault.num_classes} classes (another release)"
        )
    gen = next((g for g in vault.generations() if m.pk == g.pk), None)
    if gen is None:
        raise ArbitrationInputError(
            f"{manifest_path}: its public key is none of the vault's "
            f"{len(vault.generations())} key generation(s) (a manifest of another release)"
        )
    if m.output_size != vault.output_size:
        raise ArbitrationInputError(
            f"{manifest_path}: {m.output_size} outputs, the vault's release has {vault.output_size}"
        )
    if not profile_of(vault.scheme).uses_codebook:
        order = np.asarray(m.output_order or range(vault.output_size), dtype=np.int64)
        return order, gen.generation
    assert m.codebook is not None and gen.class_slots is not None
    assert gen.trigger_slots is not None
    if isinstance(gen.scheme, CSLiteV2):
        # format v2: triggers decrypt to class messages, so match by the trapdoor view;
        # rows with the same signature (same offsets and label) decrypt alike under
        # every key, so any assignment among them is as good
        family = gen.family_v2()
        base = np.zeros((gen.output_size, *m.codebook.shape[1:]), dtype=np.uint8)
        base[list(gen.class_slots)] = gen.class_ciphertexts
        base[list(gen.trigger_slots)] = gen.trigger_ciphertexts
        sigs: dict[bytes, list[int]] = {}
        for i, sig in enumerate(gen.scheme.owner_signatures(family, base)):
            sigs.setdefault(sig, []).append(i)
        got_sigs = gen.scheme.owner_signatures(family, m.codebook)
        v2_order = [sigs[s].pop() if sigs.get(s) else -1 for s in got_sigs]
        if -1 in v2_order or len(set(v2_order)) != len(v2_order):
            raise ArbitrationInputError(
                f"{manifest_path}: its codebook is not a permutation of this release's codebook"
            )
        return np.asarray(v2_order, dtype=np.int64), gen.generation
    # Match codebook entries by what they decrypt to under the root key: SampDist does
    # not change it, so a re-randomised codebook is matched too.
    scheme, sk = gen.scheme, gen.family().root
    g = scheme.group
    base_msgs = np.zeros((gen.output_size, g.element_size), dtype=np.uint8)
    base_msgs[list(gen.class_slots)] = g.to_bytes(gen.messages)
    base_msgs[list(gen.trigger_slots)] = g.to_bytes(scheme.dec(sk, gen.trigger_ciphertexts))
    index = {bytes(row): i for i, row in enumerate(base_msgs)}
    got = g.to_bytes(scheme.dec(sk, m.codebook))
    found = [index.get(bytes(row), -1) for row in got]
    if -1 in found or len(set(found)) != len(found):
        raise ArbitrationInputError(
            f"{manifest_path}: its codebook is not a permutation of this release's codebook"
        )
    return np.asarray(found, dtype=np.int64), gen.generation


def _candidates(vault: Vault) -> list[tuple[str, str, npt.NDArray[np.int64], tuple[int, ...]]]:
    """(name, kind, order, generations): the base order and every issued licensee order."""
    all_gens = tuple(g.generation for g in vault.generations())
    ident = np.arange(vault.output_size, dtype=np.int64)
    out: list[tuple[str, str, npt.NDArray[np.int64], tuple[int, ...]]] = [
        ("base", "base", ident, all_gens)
    ]
    index: dict[tuple[str, bytes], int] = {}
    for gen in vault.generations():
        for r in gen.licensees:
            perm = np.asarray(r.permutation, dtype=np.int64)
            key = (r.name, perm.tobytes())
            if key in index:
                name, kind, p, gs = out[index[key]]
                out[index[key]] = (name, kind, p, (*gs, gen.generation))
                continue
            index[key] = len(out)
            out.append((r.name, "licensee", perm, (gen.generation,)))
    return [(n, k, p, tuple(sorted(gs))) for n, k, p, gs in out]


def weight_evidence(
    vault: Vault, base: list[npt.NDArray[np.float32]], suspect: list[npt.NDArray[np.float32]]
) -> WeightEvidence | None:
    """Test 3 from the base model's and the suspect's inner weights (``inner_weights``).

    None when the vault records no fingerprint or the weight shapes differ."""
    fps: dict[str, Fingerprint] = {}
    for gen in vault.generations():
        for rec in gen.licensees:
            fp = record_fingerprint(rec)
            if fp is not None and fp not in fps.values():
                fps.setdefault(rec.name, fp)
    if not fps or not base or len(base) != len(suspect):
        return None
    if any(a.shape != b.shape for a, b in zip(base, suspect, strict=True)):
        return None
    aligned = align_to_base(suspect, base)
    moved = sum(1 for a, s in zip(aligned, suspect, strict=True) if not np.array_equal(a, s))
    zs = fingerprint_z(aligned, base, list(fps.values()))
    rows = tuple(
        WeightMatch(name, z, normal_tail_log10(z)) for name, z in zip(fps, zs, strict=True)
    )
    n = sum(int(b.size) for b in base)
    return WeightEvidence(
        NULL_WEIGHTS,
        n,
        moved,
        rows,
        f"{n} inner weights in {len(base)} tensors; {moved} realigned",
    )


def _file_weight_evidence(vault: Vault, vpath: Path, suspect: Path) -> WeightEvidence | None:
    base_path = vpath.parent / "model.onnx"
    try:
        base_bytes = base_path.read_bytes()
    except OSError:
        return None
    if vault.model_sha256 and hashlib.sha256(base_bytes).hexdigest() != vault.model_sha256:
        log.warning("%s is not the vault's base model (sha256): no weight test", base_path)
        return None
    try:
        return weight_evidence(
            vault, inner_weights(base_bytes), inner_weights(suspect.read_bytes())
        )
    except ModelError as exc:
        log.info("no weight test: %s", exc)
        return None


def verify_onnx(
    suspect_path: str | Path,
    vault_path: str | Path,
    alpha: float = 1e-6,
    *,
    manifest_path: str | Path | None = None,
) -> OnnxVerdict:
    """Run the vault's triggers and probes through the suspect and decide (see module doc).

    Raises an ``EncryIPError`` (exit code 2 in the CLI) when no decision can be made:
    unreadable or mismatched inputs, or a vault whose triggers cannot reach ``alpha``.
    """
    alpha = check_alpha(alpha)
    vault, arrays, vpath = load_vault_with_arrays(Path(vault_path))
    model = SuspectModel(Path(suspect_path))
    model.check_input_shape(tuple(int(d) for d in arrays.trigger_inputs.shape[1:]))
    lt = model.logits(arrays.trigger_inputs)
    lp = model.logits(arrays.probe_inputs)
    for lg in (lt, lp):
        if len(lg):
            model.check_output_size(lg, vault.output_size)
    return decide(
        vault,
        arrays,
        lt,
        lp,
        alpha,
        str(model.path),
        str(vpath),
        None if manifest_path is None else Path(manifest_path),
        weights=_file_weight_evidence(vault, vpath, model.path),
    )


def _add_manifest(
    vault: Vault,
    manifest_path: Path | None,
    cands: list[tuple[str, str, npt.NDArray[np.int64], tuple[int, ...]]],
    notes: list[str],
) -> tuple[str | None, int | None]:
    """With ``--manifest``: whose issued order it carries (None: none, then it joins the
    candidates) and its key generation; what it tells goes into ``notes``."""
    if manifest_path is None:
        return None, None
    order, manifest_gen = _manifest_order(vault, manifest_path)
    same_as = next((n for n, _, p, _g in cands if np.array_equal(p, order)), None)
    if manifest_gen != vault.generation:
        notes.append(
            f"the manifest is of key generation {manifest_gen}, before a rotation "
            f"(current: {vault.generation})"
        )
    if same_as is None:
        cands.append(("manifest", "manifest", order, (manifest_gen,)))
        notes.append(
            "the manifest's output order is none of the issued ones: "
            "the file was re-permuted consistently with its manifest"
        )
    else:
        notes.append(f"the manifest's output order is {same_as}'s")
    return same_as, manifest_gen


def _min_hits(prof: _Profile, num_triggers: int, correction: float, alpha: float) -> int:
    """The fewest trigger hits that prove ownership at ``alpha``; refuse a vault whose
    triggers could never reach it."""
    log10_a = math.log10(alpha)
    min_hits = stats.min_count_for(
        lambda h: correction + prof.fingerprint_log10(h), num_triggers, log10_a
    )
    if min_hits is None:
        best_possible = correction + prof.fingerprint_log10(num_triggers)
        raise ArbitrationInputError(
            f"the vault holds {num_triggers} triggers: even if every one hit, p would be "
            f"{stats.to_p(best_possible):.3g}, not below alpha = {alpha:g}; no decision can "
            "rest on so few triggers (use a release with more triggers, or a larger --alpha)"
        )
    return min_hits


def _attribute(
    owned: bool,
    best: CandidateEvidence,
    significant: list[CandidateEvidence],
    trig_named: str | None,
    w_sig: list[WeightMatch],
    w_named: str | None,
    w_best: WeightMatch | None,
) -> tuple[str, str | None, str]:
    """(attribution, licensee named or None, summary) from the trigger evidence (the
    significant output orders) and the weight fingerprints, which may disagree."""
    licensee: str | None = None
    if len(w_sig) > 1:
        attribution = "ambiguous"
        names = ", ".join(repr(m.name) for m in w_sig)
        summary = (
            f"owned; the weights carry the fingerprints of several licensees ({names}): "
            "a file made from their copies together (collusion); no single licensee named"
        )
    elif w_named is not None and trig_named not in (None, w_named):
        attribution = "ambiguous"
        summary = (
            f"owned; the triggers name {trig_named!r} but the weight fingerprint names "
            f"{w_named!r}: no licensee named"
        )
    elif w_named is not None and trig_named is None:
        attribution, licensee = "licensee", w_named
        how = (
            "its output order is none of the issued ones (re-permuted)"
            if not significant or best.kind != "base"
            else "its outputs are in the base order"
        )
        summary = (
            f"owned: the file is the copy issued to licensee {w_named!r} (weight fingerprint, "
            f"z = {w_best.z if w_best else math.nan:.1f}); {how}"
        )
    elif len(significant) > 1:
        attribution = "ambiguous"
        summary = (
            "owned; several output orders explain the triggers ("
            + ", ".join(e.name for e in significant)
            + "): no licensee named"
        )
    elif significant and best.kind == "licensee":
        attribution, licensee = "licensee", best.name
        summary = f"owned: the file is the copy issued to licensee {best.name!r}"
    elif significant and best.kind == "base":
        attribution = "base"
        summary = "owned: the file is the unpermuted base model (no licensee's fingerprint)"
    elif significant:
        attribution = "re-permuted"
        summary = (
            "owned: the file carries an output order none of the issued ones; "
            "its per-licensee fingerprint was erased (see verify-labels)"
        )
    elif owned:
        attribution = "re-permuted"
        summary = (
            "owned (slot recovery): the outputs were re-permuted, which erases the "
            "per-licensee fingerprint; name the licensee behind a service with "
            "verify-labels, or pass the suspect's --manifest"
        )
    else:
        attribution = "none"
        summary = "not proven: the evidence is consistent with an unrelated model"
    return attribution, licensee, summary


def decide(
    vault: Vault,
    arrays: VaultArrays,
    lt: npt.NDArray[np.float32],
    lp: npt.NDArray[np.float32],
    alpha: float,
    suspect: str = "<logits>",
    vault_name: str = "<vault>",
    manifest_path: Path | None = None,
    *,
    weights: WeightEvidence | None = None,
) -> OnnxVerdict:
    """The decision from the suspect's raw outputs on the triggers (``lt``) and probes
    (``lp``), and the weight test's evidence when it could run (``weight_evidence``)."""
    prof: _Profile = _Secure(vault) if profile_of(vault.scheme).uses_codebook else _Paper(vault)
    labels = arrays.probe_labels
    cands = _candidates(vault)
    notes: list[str] = []
    same_as, manifest_gen = _add_manifest(vault, manifest_path, cands, notes)

    log10_a = math.log10(alpha)
    n_cand = len(cands)
    n_tests = NUM_TESTS + (weights is not None)
    correction = math.log10(n_tests * n_cand)
    min_hits = _min_hits(prof, vault.num_triggers, correction, alpha)

    evidence = []
    for name, kind, perm, gens in cands:
        hits, acc = prof.evidence(perm, lt, lp, labels)
        evidence.append(
            CandidateEvidence(
                name,
                kind,
                hits,
                vault.num_triggers,
                acc,
                prof.fingerprint_log10(hits),
                manifest_agrees=same_as == name,
                generations=gens,
            )
        )
    recovery = prof.recover(lt, lp, labels)

    best = min(evidence, key=lambda e: e.log10_p_value)
    fp_log10 = min(0.0, correction + best.log10_p_value)
    rec_log10 = min(0.0, math.log10(n_tests) + recovery.log10_p_value)
    overall = min(fp_log10, rec_log10)
    w_best = None if weights is None else weights.best()
    w_named: str | None = None
    w_sig: list[WeightMatch] = []
    if weights is not None and w_best is not None:
        w_log10 = min(0.0, math.log10(n_tests * len(weights.licensees)) + w_best.log10_p_value)
        overall = min(overall, w_log10)
        w_sig = [
            m
            for m in weights.licensees
            if math.log10(n_tests * len(weights.licensees)) + m.log10_p_value < log10_a
        ]
        w_named = w_sig[0].name if len(w_sig) == 1 else None
    owned = overall < log10_a
    significant = [e for e in evidence if correction + e.log10_p_value < log10_a]
    trig_named = best.name if len(significant) == 1 and best.kind == "licensee" else None

    attribution, licensee, summary = _attribute(
        owned, best, significant, trig_named, w_sig, w_named, w_best
    )
    if owned and recovery.usable is False and not significant:
        notes.append(recovery.detail)
    return OnnxVerdict(
        suspect=suspect,
        vault=vault_name,
        profile=vault.profile,
        owned=owned,
        licensee=licensee,
        attribution=attribution,
        log10_p_value=overall,
        alpha=alpha,
        min_trigger_hits=min_hits,
        num_triggers=vault.num_triggers,
        num_probes=len(labels),
        output_size=vault.output_size,
        candidates=tuple(evidence),
        slot_recovery=recovery,
        null=NULL_FINGERPRINT,
        summary=summary,
        notes=tuple(notes),
        manifest_generation=manifest_gen,
        current_generation=vault.generation,
        weights=weights,
    )
