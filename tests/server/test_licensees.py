"""Many licensees on one server: per-licensee tokens (hashes in a file that reloads without
a restart), per-licensee counters and usage ledger, rate limits and quotas; the crypto is
the same whoever calls."""

from __future__ import annotations

import csv
import io
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encryip_runtime.cli.main import main as cli_main
from encryip_runtime.client import EncryIPClient, RemoteError, decrypt_batch
from encryip_runtime.exceptions import FormatError
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.server.config import ConfigError
from encryip_runtime.server.licensees import (
    LicenseeGate,
    LimitExceededError,
    TokenTable,
    hash_token,
    read_usage,
)
from encryip_runtime.server.status import UnauthenticatedError

from .conftest import make_config, running_server, sample_inputs

TOKENS = {"acme": "acme-secret-token", "globex": "globex-secret-token"}


def _write_tokens(path: Path, tokens: dict[str, str], limits: dict[str, Any] | None = None) -> None:
    doc = {
        "format": "encryip-tokens/1",
        "tokens": {hash_token(t): name for name, t in tokens.items()},
        "limits": limits or {},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _serve(release: Any, tokens_file: Path, **kw: Any) -> Any:
    return running_server(
        release.licensee_dir("acme"), tokens_file=tokens_file, allow_insecure_token=True, **kw
    )


def _code(call: Any) -> str:
    with pytest.raises(RemoteError) as info:
        call()
    return str(info.value.code)


def test_each_licensee_its_token_same_crypto(secure_release: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    _write_tokens(tokens, TOKENS)
    x = sample_inputs(4)
    key = LicenseeKey.load(secure_release.key("acme"))
    with _serve(secure_release, tokens) as server:
        target = f"127.0.0.1:{server.port}"
        labels = {}
        for name, token in TOKENS.items():
            with EncryIPClient(target, token=token) as client:
                pred = client.predict(x)
                labels[name] = decrypt_batch(pred, key).tolist()
                assert client.info().manifest_digest
        # nothing in the crypto depends on who calls: same labels under the same key
        assert labels["acme"] == labels["globex"]
        for token, reason in ((None, "missing"), ("wrong", "invalid")):
            with EncryIPClient(target, token=token) as client, pytest.raises(RemoteError) as info:
                client.predict(x)
            assert info.value.code == "UNAUTHENTICATED" and reason in info.value.details
        reg = server.metrics.registry
        for name in TOKENS:
            assert reg.get_sample_value("encryip_licensee_rows_total", {"licensee": name}) == 4
            assert (
                reg.get_sample_value(
                    "encryip_licensee_requests_total", {"licensee": name, "outcome": "ok"}
                )
                == 1
            )


def test_rate_limit_and_quota_resource_exhausted(secure_release: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    limits = {
        "acme": {"requests_per_second": 0.01, "burst": 2},
        "globex": {"rows_quota": 5},
    }
    _write_tokens(tokens, TOKENS, limits)
    with _serve(secure_release, tokens) as server:
        target = f"127.0.0.1:{server.port}"
        with EncryIPClient(target, token=TOKENS["acme"]) as acme:
            acme.predict(sample_inputs(1))
            acme.predict(sample_inputs(1))
            assert _code(lambda: acme.predict(sample_inputs(1))) == "RESOURCE_EXHAUSTED"
            acme.info()  # metadata calls are not limited
        with EncryIPClient(target, token=TOKENS["globex"]) as globex:
            globex.predict(sample_inputs(3))
            assert _code(lambda: globex.predict(sample_inputs(3))) == "RESOURCE_EXHAUSTED"
            globex.predict(sample_inputs(2))  # exactly the rest of the quota
            assert _code(lambda: globex.predict(sample_inputs(1))) == "RESOURCE_EXHAUSTED"
        usage = server.licensees.usage()["licensees"]
    assert usage["acme"] == {"requests": {"ok": 2, "refused": 1}, "rows": 2}
    assert usage["globex"] == {"requests": {"ok": 2, "refused": 2}, "rows": 5}


def test_tokens_file_reloads_without_restart(secure_release: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    _write_tokens(tokens, {"acme": TOKENS["acme"]})
    with _serve(secure_release, tokens) as server:
        target = f"127.0.0.1:{server.port}"
        with EncryIPClient(target, token=TOKENS["globex"]) as globex:
            assert _code(lambda: globex.predict(sample_inputs(1))) == "UNAUTHENTICATED"
        _write_tokens(tokens, {"globex": TOKENS["globex"]})  # acme revoked, globex added
        time.sleep(1.1)  # the file is checked at most once a second
        with EncryIPClient(target, token=TOKENS["globex"]) as globex:
            assert len(globex.predict(sample_inputs(1))) == 1
        with EncryIPClient(target, token=TOKENS["acme"]) as acme:
            assert _code(lambda: acme.predict(sample_inputs(1))) == "UNAUTHENTICATED"
        # a broken new file is reported; the one in force stays
        tokens.write_text("{not json")
        assert server.reload() is True  # the model reloads; the tokens keep the old table
        with EncryIPClient(target, token=TOKENS["globex"]) as globex:
            assert len(globex.predict(sample_inputs(1))) == 1


def test_usage_ledger_survives_restart_and_exports(
    secure_release: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens, ledger = tmp_path / "tokens.json", tmp_path / "usage.json"
    _write_tokens(tokens, TOKENS)
    for _ in range(2):  # two server lifetimes add up
        with (
            _serve(secure_release, tokens, usage_file=ledger, metrics_port=0) as server,
            EncryIPClient(f"127.0.0.1:{server.port}", token=TOKENS["globex"]) as c,
        ):
            c.predict(sample_inputs(3))
    doc = read_usage(ledger)
    assert doc["licensees"]["globex"] == {"requests": {"ok": 2}, "rows": 6}
    assert cli_main(["usage", str(ledger), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["licensee"] == "globex" and rows[0]["rows"] == "6"
    assert rows[0]["requests_ok"] == "2" and rows[0]["requests_refused"] == "0"


def test_usage_from_live_metrics(
    secure_release: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .conftest import free_port

    tokens = tmp_path / "tokens.json"
    _write_tokens(tokens, TOKENS)
    mport = free_port()
    with _serve(secure_release, tokens, metrics_port=mport) as server:
        with EncryIPClient(f"127.0.0.1:{server.port}", token=TOKENS["acme"]) as c:
            c.predict(sample_inputs(2))
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
            assert 'encryip_licensee_rows_total{licensee="acme"} 2.0' in r.read().decode()
        assert cli_main(["usage", "--metrics-url", f"http://127.0.0.1:{mport}/metrics"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["licensees"]["acme"] == {"requests": {"ok": 1}, "rows": 2}


def test_tokens_cli_issue_list_revoke(
    secure_release: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.json"
    assert cli_main(["tokens", "add", "initech", "--tokens-file", str(tokens),
                     "--requests-per-second", "5"]) == 0  # fmt: skip
    token = capsys.readouterr().out.strip()
    assert token not in tokens.read_text()  # only the hash is stored
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"
    with (
        _serve(secure_release, tokens) as server,
        EncryIPClient(f"127.0.0.1:{server.port}", token=token) as c,
    ):
        assert len(c.predict(sample_inputs(1))) == 1
    assert cli_main(["tokens", "list", "--tokens-file", str(tokens), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == {"initech": {"tokens": 1, "limits": {"requests_per_second": 5.0}}}
    assert cli_main(["tokens", "revoke", "initech", "--tokens-file", str(tokens)]) == 0
    assert TokenTable.load(tokens).by_hash == {}


def test_gate_is_transport_neutral(tmp_path: Path) -> None:
    """What the REST server calls: the same authenticate / admit / record."""
    tokens = tmp_path / "tokens.json"
    _write_tokens(tokens, TOKENS, {"acme": {"rows_quota": 1}})
    gate = LicenseeGate(tokens)
    assert gate.authenticate(f"Bearer {TOKENS['acme']}") == "acme"
    assert gate.authenticate(f"Bearer {TOKENS['globex']}".encode()) == "globex"
    for bad in (None, "", "Bearer", "Basic abc", "Bearer nope", f"bearer {TOKENS['acme']}"):
        with pytest.raises(UnauthenticatedError):
            gate.authenticate(bad)
    gate.admit("acme", 1)
    gate.record("acme", 1, ok=True)
    with pytest.raises(LimitExceededError) as info:
        gate.admit("acme", 1)
    assert info.value.http_status == 429 and "1 of its 1 rows" in str(info.value)
    gate.admit("globex", 10**6)  # no limits: always admitted


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"format": "encryip-tokens/1", "tokens": {"abc": "acme"}}, "tokens.abc"),
        ({"format": "encryip-tokens/1", "tokens": {"a" * 64: 3}}, "tokens." + "a" * 64),
        ({"format": "encryip-tokens/2", "tokens": {}}, "format"),
        (
            {"format": "encryip-tokens/1", "tokens": {}, "limits": {"x": {"rps": 1}}},
            "limits.x.rps",
        ),
        (
            {
                "format": "encryip-tokens/1",
                "tokens": {},
                "limits": {"x": {"requests_per_second": -1}},
            },
            "limits.x.requests_per_second",
        ),
    ],
)
def test_bad_tokens_file_names_the_field(tmp_path: Path, doc: Any, field: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError) as info:
        TokenTable.load(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_config_checks(secure_release: Any, tmp_path: Path) -> None:
    tokens, single = tmp_path / "tokens.json", tmp_path / "token"
    _write_tokens(tokens, TOKENS)
    single.write_text("x")
    d = secure_release.licensee_dir("acme")
    cases = [
        ({"tokens_file": tokens, "token_file": single, "allow_insecure_token": True}, "give one"),
        ({"tokens_file": tokens}, "--tokens-file: without TLS"),
        ({"usage_file": tmp_path / "u.json"}, "--usage-file: needs --tokens-file"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError) as info:
            make_config(d, **overrides).validate()
        assert message in str(info.value)
    np.testing.assert_equal(make_config(d).problems(), [])


def _rest_infer(port: int, model: str, token: str | None, rows: int) -> tuple[int, Any, Any]:
    x = sample_inputs(rows)
    body = {"inputs": [{"name": "pixels", "shape": list(x.shape), "datatype": "UINT8",
                        "data": x.reshape(-1).tolist()}]}  # fmt: skip
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def test_rest_asks_the_same_gate(secure_release: Any, tmp_path: Path) -> None:
    """REST: 401 without a licensee's token, 429 (with Retry-After) over its rate limit or
    quota, and the same per-licensee counters as gRPC."""
    from encryip_runtime.formats.manifest import Manifest

    from .conftest import free_port

    tokens = tmp_path / "tokens.json"
    _write_tokens(tokens, TOKENS, {"acme": {"requests_per_second": 0.01, "burst": 1},
                                   "globex": {"rows_quota": 3}})  # fmt: skip
    d = secure_release.licensee_dir("acme")
    model = Manifest.load(d / "manifest.json").model_name
    with _serve(secure_release, tokens, http_port=free_port()) as server:
        port = server.http_port
        status, doc, _ = _rest_infer(port, model, None, 1)
        assert status == 401 and "missing bearer token" in doc["error"]
        status, doc, _ = _rest_infer(port, model, "wrong", 1)
        assert status == 401 and "invalid bearer token" in doc["error"]
        status, doc, _ = _rest_infer(port, model, TOKENS["acme"], 2)
        assert status == 200 and doc["outputs"][0]["shape"] == [2]
        status, doc, headers = _rest_infer(port, model, TOKENS["acme"], 1)
        assert status == 429 and "rate limit" in doc["error"]
        assert int(headers["Retry-After"]) >= 1
        status, doc, _ = _rest_infer(port, model, TOKENS["globex"], 3)
        assert status == 200
        status, doc, _ = _rest_infer(port, model, TOKENS["globex"], 1)
        assert status == 429 and "3 of its 3 rows" in doc["error"]
        usage = server.licensees.usage()["licensees"]
        reg = server.metrics.registry
        assert reg.get_sample_value("encryip_licensee_rows_total", {"licensee": "acme"}) == 2
    assert usage["acme"] == {"requests": {"ok": 1, "refused": 1}, "rows": 2}
    assert usage["globex"] == {"requests": {"ok": 1, "refused": 1}, "rows": 3}
