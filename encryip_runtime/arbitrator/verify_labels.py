"""``verify-labels``: the licensee behind a black-box service (paper §4.4, Eqn. 5).

The investigator sends the vault's trigger inputs (``export-triggers``) to the
suspect service and reads the plain labels it returns (the service decrypts with
its key). Each licensee j's key decrypts trigger i's Fake ciphertext to its own
label ``Dec(sk_j, Fake_i)``; Eqn. 5 asks whose labels these are. Over all triggers:

* matches_j = #{i : observed_i == Dec(sk_j, Fake_i)};
* H0: the service is unrelated to this release, so its labels are independent of the
  secret Fake ciphertexts. Each expected label is then a fresh uniform draw (u3 of
  Fake is uniform), and matches with probability at most q per trigger (q = 1/K up
  to rounding: ceil(|G| / K) / |G| for the group's |G| elements), independently;
* p_j = P(Bin(T, q) >= matches_j); overall p = min_j p_j x P (Bonferroni).

After ``keys rotate`` the vault keeps every key generation; each (licensee,
generation) pair is a candidate (P counts them all), and the verdict says which
generation's key explains the labels.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encryip_runtime.arbitrator import stats
from encryip_runtime.arbitrator.errors import ArbitrationInputError
from encryip_runtime.arbitrator.inputs import check_alpha, load_vault
from encryip_runtime.crypto.profiles import profile_of
from encryip_runtime.exceptions import FormatError
from encryip_runtime.formats.vault import Vault

__all__ = ["LabelsVerdict", "LicenseeMatch", "chance_per_trigger", "read_observed", "verify_labels"]

log = logging.getLogger(__name__)

NULL_LABELS = (
    "H0: the service's labels are independent of the secret Fake ciphertexts (an unrelated "
    "service); each trigger then matches a licensee's expected label with probability <= q"
)


@dataclass(frozen=True)
class LicenseeMatch(stats.PValue):
    name: str
    matches: int
    log10_p_value: float  # this licensee alone (before Bonferroni)
    generation: int = 1  # the key generation of this candidate


@dataclass(frozen=True)
class LabelsVerdict(stats.PValue):
    observed: str
    vault: str
    profile: str
    proven: bool
    licensee: str | None
    log10_p_value: float
    alpha: float
    answered: int  # triggers with a label (null entries are skipped)
    num_triggers: int
    chance_per_trigger: float
    min_matches: int
    licensees: tuple[LicenseeMatch, ...]
    null: str
    summary: str
    #: the key generation whose key explains the labels (None when not proven)
    generation: int | None = None
    current_generation: int = 1

    @property
    def exit_code(self) -> int:
        return 0 if self.proven else 1

    def to_json(self) -> dict[str, Any]:
        doc = {"command": "verify-labels", **asdict(self), "p_value": self.p_value}
        doc["licensees"] = [{**asdict(m), "p_value": m.p_value} for m in self.licensees]
        if math.isinf(doc["log10_p_value"]):
            doc["log10_p_value"] = None
        for m in doc["licensees"]:
            if math.isinf(m["log10_p_value"]):
                m["log10_p_value"] = None
        return doc


def chance_per_trigger(vault: Vault) -> float:
    """Max over labels of P(label(Dec(sk, Fake)) == y): the message is a uniform element."""
    return profile_of(vault.scheme).chance_per_trigger(vault.scheme)


def read_observed(path: Path, vault: Vault) -> list[int | None]:
    """A JSON list (or {"labels": [...]}) of class indices or names; ``null``: unanswered."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FormatError("file not found", path=str(path)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"not valid JSON ({exc})", path=str(path)) from None
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if isinstance(doc, dict):
        if "labels" not in doc:
            raise FormatError("expected a list or an object with 'labels'", path=str(path))
        doc = doc["labels"]
    if not isinstance(doc, list):
        raise FormatError("expected a JSON list of labels", path=str(path), field="labels")
    if len(doc) != vault.num_triggers:
        raise ArbitrationInputError(
            f"{path}: {len(doc)} labels, but the vault has {vault.num_triggers} triggers "
            "(labels must be in trigger order; another release's vault?)"
        )
    names = {n: i for i, n in enumerate(vault.class_names)}
    out: list[int | None] = []
    for i, v in enumerate(doc):
        if v is None:
            out.append(None)
        elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v < vault.num_classes:
            out.append(v)
        elif isinstance(v, str) and v in names:
            out.append(names[v])
        else:
            raise FormatError(
                f"{v!r} is neither a class index in [0, {vault.num_classes}) nor a class name",
                path=str(path),
                field=f"labels[{i}]",
            )
    return out


def verify_labels(
    observed_path: str | Path, vault_path: str | Path, alpha: float = 1e-6
) -> LabelsVerdict:
    alpha = check_alpha(alpha)
    vault = load_vault(Path(vault_path))
    observed = read_observed(Path(observed_path), vault)
    return decide_labels(vault, observed, alpha, str(observed_path), str(vault_path))


def decide_labels(
    vault: Vault,
    observed: list[int | None],
    alpha: float,
    observed_name: str = "<labels>",
    vault_name: str = "<vault>",
) -> LabelsVerdict:
    answered = np.array([v is not None for v in observed], dtype=bool)
    obs = np.array([-1 if v is None else v for v in observed], dtype=np.int64)
    t = int(answered.sum())
    q = chance_per_trigger(vault)
    gens = vault.generations()
    p_count = sum(len(g.licensees) for g in gens)
    correction = math.log10(max(p_count, 1))
    log10_a = math.log10(alpha)
    min_matches = stats.min_count_for(
        lambda m: correction + stats.binomial_tail_log10(t, m, q), t, log10_a
    )
    if min_matches is None:
        best = correction + stats.binomial_tail_log10(t, t, q)
        raise ArbitrationInputError(
            f"{t} answered triggers: even if all matched one licensee, p would be "
            f"{stats.to_p(best):.3g}, not below alpha = {alpha:g}; query more triggers "
            "or use a larger --alpha"
        )
    rows = []
    for gen in gens:
        for name, expected in gen.expected_trigger_labels().items():
            m = int(np.sum((obs == expected) & answered))
            rows.append(LicenseeMatch(name, m, stats.binomial_tail_log10(t, m, q), gen.generation))
    best_row = min(rows, key=lambda r: r.log10_p_value)
    overall = min(0.0, correction + best_row.log10_p_value)
    significant = [r for r in rows if correction + r.log10_p_value < log10_a]
    proven = len(significant) == 1
    if proven:
        when = (
            ""
            if best_row.generation == vault.generation
            else f" (key generation {best_row.generation}, before a rotation; "
            f"current: {vault.generation})"
        )
        summary = (
            f"the labels are those of licensee {best_row.name!r}{when}: "
            f"{best_row.matches} of {t} "
            "triggers decrypt as its key decrypts them (Eqn. 5)"
        )
    elif significant:
        summary = (
            "ambiguous: several licensees explain the labels ("
            + ", ".join(f"{r.name} (generation {r.generation})" for r in significant)
            + ")"
        )
    else:
        summary = (
            "not proven: the labels match no licensee more than chance "
            f"(best: {best_row.name!r}, {best_row.matches} of {t})"
        )
    return LabelsVerdict(
        observed=observed_name,
        vault=vault_name,
        profile=vault.profile,
        proven=proven,
        licensee=best_row.name if proven else None,
        log10_p_value=overall,
        alpha=alpha,
        answered=t,
        num_triggers=vault.num_triggers,
        chance_per_trigger=q,
        min_matches=min_matches,
        licensees=tuple(rows),
        null=NULL_LABELS,
        summary=summary,
        generation=best_row.generation if proven else None,
        current_generation=vault.generation,
    )
