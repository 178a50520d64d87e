"""Secret files are 0600 and written atomically; secrets are compared in constant time;
the runtime refuses to start next to secret material (CLI exit code and message).
"""

from __future__ import annotations

import ast
import hmac
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from server.conftest import free_port, running_server, runtime_copy, sample_inputs
from tiny_release import make_tiny_release

from encryip_runtime.client import EncryIPClient, RemoteError
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.formats.vault import Vault

RUNTIME = Path(__file__).resolve().parents[2] / "encryip_runtime"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- modes ---------------------------------------------------------------------------------


def test_release_secret_files_are_private_public_files_are_not(tmp_path: Path) -> None:
    release = make_tiny_release(tmp_path / "r", "secure")
    secret = [release.paths.vault, release.root / "vault.npz"]
    secret += [release.key(n) for n in release.licensees]
    for path in secret:
        assert mode(path) == 0o600, (path, oct(mode(path)))
    public = [p for p in release.root.rglob("*") if p.name in ("model.onnx", "manifest.json")]
    assert len(public) == 2 * (1 + len(release.licensees))
    for path in public:  # what the runtime host gets stays readable
        assert mode(path) & 0o044 == 0o044, (path, oct(mode(path)))
    # `keys add` writes the new key 0600 too, and leaves no temp files behind.
    from encryip_runtime.cli.main import main

    assert main(["keys", "add", str(release.root), "newcomer"]) == 0
    assert mode(release.key("newcomer")) == 0o600
    assert not [p for p in release.root.rglob(".*.tmp")]


# -- atomic writes: a process killed mid-write -------------------------------------------

KILL_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from encryip_runtime.formats.keyfile import LicenseeKey
    from encryip_runtime.formats.vault import Vault

    kind, src, dst = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    real_fsync = os.fsync

    def fsync_then_die(fd):
        real_fsync(fd)
        # the new bytes are in the temp file, the rename has not happened: die right here
        os.kill(os.getpid(), signal.SIGKILL)

    os.fsync = fsync_then_die
    if kind == "key":
        LicenseeKey.load(src).save(dst)
    else:
        Vault.load(src).save(dst)
    """
)


@pytest.mark.parametrize("kind", ["key", "vault"])
def test_kill_mid_write_leaves_old_file_whole(tmp_path: Path, kind: str) -> None:
    release = make_tiny_release(tmp_path / "r", "secure")
    # The new content comes from another licensee / another release: it differs.
    other = make_tiny_release(tmp_path / "o", "secure", seed=5)
    if kind == "key":
        dst, src = release.key("acme"), other.key("acme")
        load: Any = LicenseeKey.load
    else:
        dst, src = release.paths.vault, other.paths.vault
        load = Vault.load
    before = dst.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", KILL_MID_WRITE, kind, str(src), str(dst)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert dst.read_bytes() == before  # old content, whole: never a half-written secret
    load(dst)
    assert mode(dst) == 0o600
    leftovers = [p for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}.")]
    assert leftovers, "the kill should have left the temp file behind"
    for tmp in leftovers:  # what the crash left is private too
        assert mode(tmp) == 0o600, (tmp, oct(mode(tmp)))


# -- constant-time comparison --------------------------------------------------------------


def _dotted(node: ast.AST) -> list[str]:
    """``rec.sk.a`` -> ["rec", "sk", "a"]; [] for anything that is not a plain name chain."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *parts]
    return []


SECRET_PARTS = frozenset({"token", "secret", "password", "_expected", "presented", "sk", "sk_j"})


def _is_secret(parts: list[str]) -> bool:
    low = [p.lower() for p in parts]
    if SECRET_PARTS & set(low) or any(p.endswith("_token") for p in low):
        return True
    return len(low) >= 2 and low[-1] == "t" and low[-2] in ("vault", "family")


def test_no_plain_equality_on_secrets_in_runtime_source() -> None:
    """Code inspection: ``==``/``!=`` never touch a token or secret-key value anywhere in
    encryip_runtime/, and the token check uses ``hmac.compare_digest``."""
    offenders = []
    for path in sorted(RUNTIME.rglob("*.py")):
        if "_generated" in path.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                continue
            if any(_is_secret(_dotted(op)) for op in (node.left, *node.comparators)):
                offenders.append(f"{path.relative_to(RUNTIME)}:{node.lineno} {ast.unparse(node)}")
    assert not offenders, offenders
    security = (RUNTIME / "server" / "security.py").read_text()
    assert "hmac.compare_digest(presented, self._expected)" in security
    ristretto = (RUNTIME / "crypto" / "ristretto.py").read_text()
    assert "hmac.compare_digest" in ristretto  # group.equal: check_key on secure keys


def test_token_check_is_compare_digest_every_time(
    secure_release: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behaviour: every token, right or wrong (any length, any shared prefix), goes through
    hmac.compare_digest, and every wrong one gets the same answer."""
    token = "s3cret-token-" + "x" * 20
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    wrong = ["", "s", token[:-1], token + "y", "x" + token[1:], token.upper(), "Bearer " + token]
    with running_server(
        secure_release.licensee_dir("acme"), token_file=token_file, allow_insecure_token=True
    ) as server:
        target = f"127.0.0.1:{server.port}"
        with EncryIPClient(target, token=token) as client:
            assert len(client.predict(sample_inputs(1))) == 1
        details = set()
        for bad in wrong:
            with EncryIPClient(target, token=bad or None) as client:
                with pytest.raises(RemoteError) as info:
                    client.predict(sample_inputs(1))
                assert info.value.code == "UNAUTHENTICATED"
                assert bad == "" or bad not in info.value.details  # never echoed back
                details.add(info.value.details)
    assert details <= {"missing bearer token", "invalid bearer token"}
    expected = ("Bearer " + token).encode()
    compared = [a for a, b in calls if b == expected]
    assert (b"Bearer " + token.encode()) in compared
    for bad in wrong[1:]:
        assert ("Bearer " + bad).encode() in compared, bad


# -- refusing to start next to secret material ---------------------------------------------


@pytest.mark.parametrize("secret", ["vault.json", "vault.npz", "acme.key", "keys/acme.key"])
def test_serve_refuses_secret_material_cli(
    secure_release: Any, tmp_path: Path, secret: str
) -> None:
    d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / "serve")
    (d / secret).parent.mkdir(exist_ok=True)
    shutil.copy(secure_release.key("acme"), d / secret)
    for argv, env in (
        ([str(d), "--port", "0", "--health-port", "0", "--metrics-port", "0"], {}),
        (["--port", "0", "--health-port", "0", "--metrics-port", "0"],
         {"ENCRYIP_RELEASE_DIR": str(d)}),
    ):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "encryip_runtime.cli.main", "serve", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, **env),
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("encryip serve: error: refusing to serve"), proc.stderr
        assert secret.split("/")[-1] in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_secret_dropped_in_while_serving_blocks_reload(secure_release: Any, tmp_path: Path) -> None:
    d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / "serve")
    with running_server(d, metrics_port=free_port()) as server:
        good = server.store.current
        shutil.copy(secure_release.key("acme"), d / "acme.key")
        assert not server.reload()
        assert server.store.current is good


@pytest.mark.parametrize(
    ("snippet", "flagged"),
    [
        ("presented == self._expected", True),
        ("token != b'x'", True),
        ("key.sk.a == other.sk.a", True),
        ("vault.t == 0", True),
        ("hmac.compare_digest(presented, self._expected)", False),
        ("expected != len(data)", False),
    ],
)
def test_the_inspection_catches_plain_comparisons(snippet: str, flagged: bool) -> None:
    node = ast.parse(snippet, mode="eval").body
    hit = isinstance(node, ast.Compare) and any(
        _is_secret(_dotted(op)) for op in (node.left, *node.comparators)
    )
    assert hit == flagged
