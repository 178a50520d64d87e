"""The release self-check: every licensee file must prove ownership before we say "done".

``train`` and ``protect`` write the release into a hidden staging directory, then run
the arbitrator's own ``verify-onnx`` decision (``encryip_runtime.arbitrator.verify_onnx``,
the very code an arbitrator would run) on each licensee variant against the vault. A
variant passes when the verdict names *that* licensee at p < ``alpha`` (1e-6) and every
trigger produces its own Fake (recovery 1.0). ``exporter.job`` consolidates the triggers
with extra epochs while a check fails, and renames the staging directory onto ``--out``
only once every variant passes, so a failed run leaves no finished-looking release.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from encryip_runtime.exceptions import EncryIPError

__all__ = ["SELF_CHECK_ALPHA", "SelfCheck", "SelfCheckError", "VariantCheck", "check_release"]

log = logging.getLogger(__name__)

#: Significance every licensee variant must reach: the arbitrator's default alpha.
SELF_CHECK_ALPHA = 1e-6


class SelfCheckError(EncryIPError):
    """The release could not prove ownership of its own licensee files; none was written."""


@dataclass(frozen=True)
class VariantCheck:
    licensee: str
    passed: bool
    attribution: str  # verify-onnx's: licensee | base | re-permuted | ambiguous | none | error
    named: str | None  # the licensee verify-onnx named, if any
    log10_p_value: float | None
    trigger_hits: int  # triggers that output exactly their Fake, in this licensee's order
    num_triggers: int
    reason: str = ""


@dataclass
class SelfCheck:
    """What ``report/metrics.json`` records under ``self_check``."""

    alpha: float = SELF_CHECK_ALPHA
    passed: bool = False
    skipped: bool = False  # JobConfig.self_check=False (toy-budget cost benchmarks only)
    variants: list[VariantCheck] = field(default_factory=list)
    consolidation_epochs: int = 0
    max_consolidation_epochs: int = 0
    consolidation_seconds: float = 0.0
    accuracy_before_consolidation: float | None = None
    accuracy_after_consolidation: float | None = None
    trigger_accuracy_before_consolidation: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)  # one per check run

    @property
    def failures(self) -> list[VariantCheck]:
        return [v for v in self.variants if not v.passed]

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        before, after = self.accuracy_before_consolidation, self.accuracy_after_consolidation
        doc["accuracy_change_pp"] = (
            None if before is None or after is None else 100 * (after - before)
        )
        return doc


def check_release(
    root: Path, licensees: list[str], alpha: float = SELF_CHECK_ALPHA
) -> list[VariantCheck]:
    """Run ``verify-onnx`` on every licensee variant under ``root`` against ``root``'s vault."""
    from encryip_runtime.arbitrator.verify_onnx import verify_onnx

    out = []
    for name in licensees:
        model = root / "licensees" / name / "model.onnx"
        try:
            v = verify_onnx(model, root / "vault.json", alpha)
        except EncryIPError as exc:  # e.g. too few triggers to ever reach alpha
            out.append(VariantCheck(name, False, "error", None, None, 0, 0, str(exc)))
            continue
        mine = next(c for c in v.candidates if c.kind == "licensee" and c.name == name)
        named_right = v.owned and v.attribution == "licensee" and v.licensee == name
        full = mine.trigger_hits == v.num_triggers
        reasons = []
        if not named_right:
            reasons.append(f"verify-onnx: {v.summary} (p = {v.p_value:.3g})")
        if not full:
            reasons.append(f"{mine.trigger_hits}/{v.num_triggers} triggers recovered")
        out.append(
            VariantCheck(
                name,
                named_right and full,
                v.attribution,
                v.licensee,
                v.log10_p_value if v.log10_p_value != float("-inf") else None,
                mine.trigger_hits,
                v.num_triggers,
                "; ".join(reasons),
            )
        )
        log.info(
            "self-check %s: %s, %d/%d triggers, log10 p %.1f",
            name,
            "PASS" if out[-1].passed else "FAIL",
            mine.trigger_hits,
            v.num_triggers,
            v.log10_p_value,
        )
    return out


def failure_message(check: SelfCheck, command: str) -> str:
    """What went wrong and what to change, for the CLI's one error line."""
    parts = [f"{v.licensee}: {v.reason or v.attribution}" for v in check.failures]
    advice = (
        "raise --max-trigger-epochs, --epochs or --lr"
        if command == "train"
        else "start from a better-trained model, or raise --max-trigger-epochs, --epochs or --lr"
    )
    return (
        f"self-check failed: the release cannot prove ownership of its own licensee files "
        f"at p < {check.alpha:g} with every trigger recovered, after "
        f"{check.consolidation_epochs} trigger-consolidation epoch(s) "
        f"({'; '.join(parts)}). No release was written. To fix it: {advice}; "
        "fewer --triggers are easier to learn (at least enough for p < 1e-6)."
    )
