"""A deliberate leaker's trigger detectors, the filtering proxy and re-permutation (issue 14).

Each detector is one party's, built from what that party holds; the numbers these
tests pin are the ones benchmarks/attacks.py measures on MNIST (docs/results.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encryip_runtime.arbitrator.verify_labels import decide_labels
from encryip_runtime.arbitrator.verify_onnx import verify_onnx
from encryip_runtime.attacks.detectors import (
    ClassMessageDetector,
    InputStatsDetector,
    Query,
    SlotDetector,
    auroc,
    score_detector,
)
from encryip_runtime.attacks.proxy import FilteringProxy, ProxyServer, query_labels
from encryip_runtime.attacks.repermute import repermute_variant
from encryip_runtime.client import EncryIPClient, load_key
from encryip_runtime.formats.manifest import Manifest

from .conftest import AttackRelease


def test_auroc() -> None:
    assert auroc([0, 1], [2, 3]) == 1.0
    assert auroc([2, 3], [0, 1]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5


def test_input_statistics_spot_noise_triggers(attack_release: AttackRelease) -> None:
    arr = attack_release.vault.load_arrays(attack_release.release.paths.vault)
    det = InputStatsDetector()
    det.fit(Query(attack_release.natural(400, seed=10)[0]))
    s = score_detector(det, Query(arr.trigger_inputs), Query(attack_release.natural(500, 11)[0]))
    assert s.triggers_flagged == s.num_triggers
    assert s.false_positive_rate < 0.05
    assert s.advantage > 0.95


def test_file_holder_spots_triggers_by_their_slot(attack_release: AttackRelease) -> None:
    arr = attack_release.vault.load_arrays(attack_release.release.paths.vault)
    det = SlotDetector(attack_release.release.licensee_dir("acme") / "model.onnx")
    det.fit(Query(attack_release.natural(300, seed=12)[0]))
    assert len(det.winning) == 10  # only the class slots win on ordinary inputs
    s = score_detector(det, Query(arr.trigger_inputs), Query(attack_release.natural(500, 13)[0]))
    assert (s.triggers_flagged, s.natural_flagged) == (s.num_triggers, 0)


def test_key_holder_spots_fake_decryptions(
    attack_release: AttackRelease, owner_server: str
) -> None:
    arr = attack_release.vault.load_arrays(attack_release.release.paths.vault)
    key = load_key(attack_release.release.key("acme"))
    with EncryIPClient(owner_server) as client:

        def q(x: np.ndarray) -> Query:
            return Query(x, key.scheme.from_wire(list(client.predict(x).ciphertexts)))

        det = ClassMessageDetector(key)
        det.fit(q(attack_release.natural(200, seed=14)[0]))
        assert len(det.known) == 10  # the K class messages
        s = score_detector(det, q(arr.trigger_inputs), q(attack_release.natural(500, 15)[0]))
    assert (s.triggers_flagged, s.natural_flagged) == (s.num_triggers, 0)


@pytest.mark.parametrize("filtering", [False, True])
def test_filtering_proxy_defeats_verify_labels(
    attack_release: AttackRelease, owner_server: str, filtering: bool
) -> None:
    """Owner-hosted, format v1: the reseller's labels name acme, unless it filters."""
    rel, vault = attack_release.release, attack_release.vault
    arr = vault.load_arrays(rel.paths.vault)
    key = load_key(rel.key("acme"))
    dets = [InputStatsDetector(), ClassMessageDetector(key)] if filtering else []
    proxy = FilteringProxy(owner_server, rel.key("acme"), dets)
    proxy.fit(attack_release.natural(200, seed=16)[0])
    with ProxyServer(proxy) as srv:
        x, y = attack_release.natural(100, seed=17)
        assert (query_labels(srv.endpoint, x) == y).mean() > 0.98  # a working service
        observed = query_labels(srv.endpoint, arr.trigger_inputs).tolist()
    v = decide_labels(vault, observed, 1e-6)
    if filtering:
        assert proxy.flagged >= len(observed)
        assert not v.proven and v.licensee is None
    else:
        assert v.proven and v.licensee == "acme"


def test_consistent_repermutation_erases_the_slot_fingerprint(
    attack_release: AttackRelease, tmp_path: Path
) -> None:
    rel = attack_release.release
    src = rel.licensee_dir("acme")
    model, manifest, _order = repermute_variant(
        (src / "model.onnx").read_bytes(), Manifest.load(src / "manifest.json")
    )
    (tmp_path / "model.onnx").write_bytes(model)
    manifest.save(tmp_path / "manifest.json")
    x, y = attack_release.natural(50, seed=18)
    # the same service: every decrypted label is unchanged
    from encryip_runtime.pipeline import ProtectedModel

    key = load_key(rel.key("acme"))
    for d in (src, tmp_path):
        pm = ProtectedModel.load(d)
        got = key.scheme.decrypt_labels(key.sk, pm.scheme.from_wire(pm.predict(x)))
        np.testing.assert_array_equal(got, y)
    v = verify_onnx(tmp_path / "model.onnx", rel.paths.vault)
    assert v.owned
    assert v.licensee in (None, "acme")
    json.dumps(v.to_json())


@pytest.mark.parametrize("hidden", [False, True])
def test_weight_fingerprint_names_the_leaker_of_a_repermuted_file(
    secure_release: Any, tmp_path: Path, hidden: bool
) -> None:
    """Outputs (and hidden units) re-permuted consistently: the weights still name acme."""
    src = secure_release.licensee_dir("acme")
    model, _manifest, _ = repermute_variant(
        (src / "model.onnx").read_bytes(), Manifest.load(src / "manifest.json"), hidden=hidden
    )
    (tmp_path / "model.onnx").write_bytes(model)
    v = verify_onnx(tmp_path / "model.onnx", secure_release.paths.vault)
    assert v.weights is not None
    assert v.weights.realigned_layers == (1 if hidden else 0)
    assert (v.owned, v.licensee, v.attribution) == (True, "acme", "licensee"), v.summary
    assert v.p_value < 1e-6
    z = {m.name: m.z for m in v.weights.licensees}
    assert z["acme"] > 30 and abs(z["globex"]) < 5 and abs(z["initech"]) < 5
    assert json.loads(json.dumps(v.to_json()))["weights"]["licensees"][0]["name"] == "acme"


def test_weight_fingerprint_names_nobody_for_other_files(
    secure_release: Any, tmp_path: Path
) -> None:
    from tiny_release import make_tiny_release

    v = verify_onnx(secure_release.paths.model, secure_release.paths.vault)
    assert v.weights is not None and v.licensee is None
    assert all(math.isnan(m.z) for m in v.weights.licensees)  # no residual at all
    # another release's licensee file of the same architecture: z ~ N(0, 1)
    other = make_tiny_release(tmp_path / "other", "secure", seed=5)
    v = verify_onnx(other.licensee_dir("acme") / "model.onnx", secure_release.paths.vault)
    assert v.weights is not None and v.licensee is None
    assert all(abs(m.z) < 5 for m in v.weights.licensees)


def test_repermute_command(secure_release: Any, tmp_path: Path) -> None:
    from encryip_runtime.attacks.repermute import main

    assert main([str(secure_release.licensee_dir("globex")), str(tmp_path), "--hidden"]) == 0
    m = Manifest.load(tmp_path / "manifest.json")
    assert m.licensee == "globex"
    v = verify_onnx(tmp_path / "model.onnx", secure_release.paths.vault)
    assert v.licensee == "globex"


def test_v2_filtering_proxy_cannot_hide_the_leaker(tmp_path: Path) -> None:
    """Format v2 with data-like triggers, owner-hosted: the same filtering proxy (input
    statistics + the key holder's best detector) no longer hides acme from verify-labels."""
    from server.conftest import running_server

    from encryip_runtime.attacks.detectors import KeyHolderDetector

    from .conftest import build_attack_release, has_secure_format_2

    if not has_secure_format_2():
        pytest.skip("this build has no secure format 2")
    pytest.importorskip("encryip_runtime.attacks.keyholder")
    ar = build_attack_release(tmp_path / "v2", secure_format=2, noise=False)
    rel, vault = ar.release, ar.vault
    arr = vault.load_arrays(rel.paths.vault)
    with running_server(rel.public_dir(tmp_path / "public")) as srv:
        key = load_key(rel.key("acme"))
        det = KeyHolderDetector(key)
        assert det.uses == "MembershipDetector"
        proxy = FilteringProxy(
            f"127.0.0.1:{srv.port}", rel.key("acme"), [InputStatsDetector(), det]
        )
        proxy.fit(ar.natural(200, seed=20)[0])
        with ProxyServer(proxy) as ps:
            x, y = ar.natural(100, seed=21)
            assert (query_labels(ps.endpoint, x) == y).mean() > 0.9
            before = proxy.flagged
            observed = query_labels(ps.endpoint, arr.trigger_inputs).tolist()
            flagged_triggers = proxy.flagged - before
    v = decide_labels(vault, observed, 1e-6)
    assert flagged_triggers <= 4, flagged_triggers
    assert v.proven and v.licensee == "acme", v.summary


def test_averaged_files_of_two_licensees_are_reported_as_collusion(
    secure_release: Any, tmp_path: Path
) -> None:
    """Two licensees average their files' inner weights: both fingerprints show, the
    verdict names the pair as colluders and no single licensee."""
    import onnx
    from onnx import numpy_helper

    a = onnx.load(str(secure_release.licensee_dir("acme") / "model.onnx"))
    g = onnx.load(str(secure_release.licensee_dir("globex") / "model.onnx"))
    inner = {"w1"}  # the tiny MLP's inner weight (w2 is the output layer)
    ginit = {t.name: numpy_helper.to_array(t) for t in g.graph.initializer}
    for t in a.graph.initializer:
        if t.name in inner:
            avg = (numpy_helper.to_array(t) + ginit[t.name]) / 2
            t.CopyFrom(numpy_helper.from_array(avg.astype(np.float32), t.name))
    onnx.save(a, str(tmp_path / "avg.onnx"))
    v = verify_onnx(tmp_path / "avg.onnx", secure_release.paths.vault)
    assert v.weights is not None
    z = {m.name: m.z for m in v.weights.licensees}
    assert z["acme"] > 20 and z["globex"] > 20 and abs(z["initech"]) < 5
    assert v.owned and v.licensee is None and v.attribution == "ambiguous"
    assert "'acme'" in v.summary and "'globex'" in v.summary


@pytest.mark.parametrize("filtering", [False, True])
def test_verify_endpoint_against_the_proxy(
    attack_release: AttackRelease, owner_server: str, filtering: bool
) -> None:
    """The arbitrator's own verify-endpoint, pointed at the reseller (format v1)."""
    from encryip_runtime.arbitrator.verify_endpoint import verify_endpoint
    from encryip_runtime.attacks.detectors import KeyHolderDetector
    from encryip_runtime.attacks.proxy import MODEL_NAME

    rel = attack_release.release
    dets = [InputStatsDetector(), KeyHolderDetector(load_key(rel.key("acme")))] if filtering else []
    proxy = FilteringProxy(owner_server, rel.key("acme"), dets)
    proxy.fit(attack_release.natural(200, seed=22)[0])
    with ProxyServer(proxy) as ps:
        v = verify_endpoint(f"grpc://{ps.endpoint}", rel.paths.vault, model=MODEL_NAME, qps=1000)
    assert v.licensee == (None if filtering else "acme"), v.summary
