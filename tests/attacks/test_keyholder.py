"""A single key holder's trigger detectors: perfect on format v1, blind on format v2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encryip_runtime.attacks.keyholder import (
    MembershipDetector,
    RequeryDetector,
    advantage,
    requery_advantage_v2,
)
from encryip_runtime.formats import LicenseeKey, Vault
from encryip_runtime.pipeline import ProtectedModel
from tests.release.conftest import images_for_slots, make_selector_release


def _outputs(release: Any, who: str, slots: np.ndarray) -> tuple[Vault, np.ndarray]:
    vault = Vault.load(release.paths.vault)
    pm = ProtectedModel.load(release.licensee_dir(who))
    # the selector lights base slot s; the licensee's file and codebook permute together
    wire = pm.predict(images_for_slots(slots))
    pm.close()
    return vault, wire


@pytest.fixture(scope="module", params=[1, 2])
def release(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_selector_release(
        tmp_path_factory.mktemp(f"kh-v{request.param}"), "secure", secure_format=request.param
    )


def _slots(vault: Vault, kind: str, repeat: int, who: str = "acme") -> np.ndarray:
    """Trigger slots, or class slots "matched": the class each trigger decrypts to, so
    both samples have the same labels and only the decryptions can differ."""
    assert vault.class_slots is not None and vault.trigger_slots is not None
    if kind == "trigger":
        slots = np.asarray(vault.trigger_slots, dtype=np.int64)
    elif kind == "matched":
        slots = np.asarray(vault.class_slots)[vault.expected_trigger_labels()[who]]
    else:
        slots = np.asarray(vault.class_slots, dtype=np.int64)
    return np.tile(slots, repeat)


def test_membership_detector(release: Any) -> None:
    v2 = Vault.load(release.paths.vault).format_version == 2
    reps = 150 if v2 else 10
    key = LicenseeKey.load(release.key("acme"))
    fit = 120 if v2 else 20
    vault, ordinary = _outputs(
        release, "acme", _slots(Vault.load(release.paths.vault), "class", fit)
    )
    _, classes = _outputs(release, "acme", _slots(vault, "matched", reps))
    _, triggers = _outputs(release, "acme", _slots(vault, "trigger", reps))
    learned = MembershipDetector(key).fit(ordinary)
    if not v2:  # format v1: every trigger flagged, no ordinary output
        assert learned.flags(triggers).all()
        assert not learned.flags(classes).any()
        assert advantage(learned.flags(triggers), learned.flags(classes)) == 1.0
        return
    exact = MembershipDetector(key, known_windows=True)
    assert not exact.flags(classes).any()  # class outputs always lie in the windows
    adv_exact = advantage(exact.flags(triggers), exact.flags(classes))
    adv_learned = advantage(learned.flags(triggers), learned.flags(classes))
    assert adv_exact <= 0.01 and adv_learned <= 0.01, (adv_exact, adv_learned)
    # and the labels the key decrypts for triggers are the vault's
    labels = learned.observe(triggers)[0]
    want = np.tile(vault.expected_trigger_labels()["acme"], reps)
    np.testing.assert_array_equal(labels, want)


def test_requery_detector(release: Any) -> None:
    vault = Vault.load(release.paths.vault)
    v2 = vault.format_version == 2
    k = 16 if v2 else 2
    queries = 15 if v2 else 4
    key = LicenseeKey.load(release.key("acme"))
    _, cls = _outputs(release, "acme", np.repeat(_slots(vault, "matched", queries), k))
    _, trig = _outputs(release, "acme", np.repeat(_slots(vault, "trigger", queries), k))
    det = RequeryDetector(
        MembershipDetector(key, known_windows=True) if v2 else MembershipDetector(key).fit(cls)
    )
    groups_c = [cls[i : i + k] for i in range(0, len(cls), k)]
    groups_t = [trig[i : i + k] for i in range(0, len(trig), k)]
    adv = advantage(det.flags(groups_t), det.flags(groups_c))
    if not v2:
        assert adv == 1.0
        return
    assert adv <= 0.05, adv
    mean, worst = requery_advantage_v2(vault, 16)
    assert worst <= 0.05 and mean <= worst
    assert requery_advantage_v2(vault, 1)[1] <= 0.01


def test_exact_advantage_needs_a_v2_vault(tmp_path: Path) -> None:
    rel = make_selector_release(tmp_path / "v1", "secure", secure_format=1)
    with pytest.raises(ValueError, match="format v2"):
        requery_advantage_v2(Vault.load(rel.paths.vault), 16)


def test_filtering_proxy_still_names_the_leaker_on_format_2(tmp_path: Path) -> None:
    """Owner-hosted, format v2, data-like triggers: the reseller's key-holder detector
    (exact class windows) flags next to nothing, so its answers carry acme's trigger
    labels and verify-labels names acme."""
    from encryip_runtime.arbitrator.verify_labels import decide_labels
    from encryip_runtime.attacks.keyholder import KeyHolderDetector
    from encryip_runtime.attacks.proxy import FilteringProxy, ProxyServer, query_labels
    from encryip_runtime.client import load_key
    from tests.attacks.conftest import build_attack_release
    from tests.server.conftest import running_server

    ar = build_attack_release(tmp_path / "rel", secure_format=2, noise=False)
    rel, vault = ar.release, ar.vault
    arr = vault.load_arrays(rel.paths.vault)
    with running_server(rel.public_dir(tmp_path / "public")) as srv:
        upstream = f"127.0.0.1:{srv.port}"
        det = KeyHolderDetector(load_key(rel.key("acme")), known_windows=True)
        proxy = FilteringProxy(upstream, rel.key("acme"), [det])
        proxy.fit(ar.natural(100, seed=16)[0])
        with ProxyServer(proxy) as px:
            x, y = ar.natural(60, seed=17)
            assert (query_labels(px.endpoint, x) == y).mean() > 0.98
            observed = query_labels(px.endpoint, arr.trigger_inputs).tolist()
        proxy.close()
    v = decide_labels(vault, observed, 1e-6)
    assert v.proven and v.licensee == "acme", v.summary
