"""Many licensees on one owner-hosted server: who is calling, may they, and how much.

Transport-neutral: the gRPC interceptor (:mod:`security`) and the REST server call the
same :class:`LicenseeGate`::

    licensee = gate.authenticate(authorization_header)   # UnauthenticatedError
    gate.admit(licensee, rows)                            # LimitExceededError
    ... predict ...
    gate.record(licensee, rows, ok=True)

Nothing here touches the model or the crypto: every licensee gets the same ciphertexts
of the same public key; who calls only decides whether the call runs and what it counts.

**Tokens file** (``--tokens-file``, ``encryip-tokens/1``): SHA-256 hashes of the bearer
tokens, never the tokens, each naming a licensee, plus optional limits per licensee::

    {"format": "encryip-tokens/1",
     "tokens": {"<sha256 hex of a token>": "acme", "<another>": "globex"},
     "limits": {"acme": {"requests_per_second": 50, "burst": 100, "rows_quota": 1000000}}}

It is re-read when it changes (checked at most once a second on the request path, and on
SIGHUP); a broken new version is reported and the old one stays in force.
``encryip tokens add NAME --tokens-file F`` makes a token and stores only its hash.

**Usage** (``--usage-file``, ``encryip-usage/1``): per licensee, requests by outcome and
rows predicted since the ledger started; written atomically every few seconds and on
stop, and read back at start, so counts survive restarts. ``rows_quota`` counts against
it (start a new ledger per billing period). ``encryip usage`` exports it as JSON or CSV.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from encryip_runtime.exceptions import EncryIPError, FormatError
from encryip_runtime.formats.jsonio import read_json_document, write_json
from encryip_runtime.server.status import LimitExceededError, UnauthenticatedError

__all__ = [
    "TOKENS_FORMAT",
    "USAGE_FORMAT",
    "LicenseeGate",
    "LimitExceededError",
    "Limits",
    "TokenTable",
    "hash_token",
    "read_usage",
]

log = logging.getLogger(__name__)

TOKENS_FORMAT = "encryip-tokens/1"
USAGE_FORMAT = "encryip-usage/1"
_RELOAD_CHECK_S = 1.0
_SAVE_EVERY_S = 5.0


def hash_token(token: str | bytes) -> str:
    """SHA-256 hex of a bearer token (what the tokens file stores)."""
    raw = token.encode("utf-8") if isinstance(token, str) else token
    return hashlib.sha256(raw.strip()).hexdigest()


@dataclass(frozen=True)
class Limits:
    requests_per_second: float | None = None
    burst: int | None = None  # bucket size; default: max(1, ceil(requests_per_second))
    rows_quota: int | None = None  # rows per usage ledger (billing period)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class TokenTable:
    by_hash: dict[str, str]  # sha256 hex -> licensee
    limits: dict[str, Limits] = field(default_factory=dict)

    @property
    def licensees(self) -> list[str]:
        return sorted(set(self.by_hash.values()))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TOKENS_FORMAT,
            "tokens": dict(sorted(self.by_hash.items(), key=lambda kv: (kv[1], kv[0]))),
            "limits": {n: lim.to_json() for n, lim in sorted(self.limits.items())},
        }

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        f = read_json_document(Path(path), TOKENS_FORMAT)
        tokens = f.obj_("tokens")
        by_hash: dict[str, str] = {}
        for digest in tokens.obj:
            name = tokens.str(digest)
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise tokens.error(digest, "expected a SHA-256 hex digest (64 lowercase hex)")
            if not name.strip() or len(name) > 128 or not name.isprintable():
                raise tokens.error(digest, f"bad licensee name {name!r}")
            by_hash[digest] = name
        limits: dict[str, Limits] = {}
        if f.has("limits"):
            lf = f.obj_("limits")
            for name in lf.obj:
                one = lf.obj_(name)
                unknown = set(one.obj) - {"requests_per_second", "burst", "rows_quota"}
                if unknown:
                    raise one.error(sorted(unknown)[0], "unknown limit")
                rps = None
                if one.has("requests_per_second"):
                    v = one.raw("requests_per_second")
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                        raise one.error("requests_per_second", "expected a positive number")
                    if math.isinf(v):
                        raise one.error("requests_per_second", "expected a finite number")
                    rps = float(v)
                burst = one.int("burst", lo=1) if one.has("burst") else None
                quota = one.int("rows_quota", lo=0) if one.has("rows_quota") else None
                limits[name] = Limits(rps, burst, quota)
        return cls(by_hash, limits)


@dataclass
class _Account:
    requests: dict[str, int] = field(default_factory=dict)  # outcome -> count
    rows: int = 0
    tokens: float = 0.0  # token bucket
    refilled: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"requests": dict(sorted(self.requests.items())), "rows": self.rows}


def read_usage(path: Path) -> dict[str, Any]:
    """A usage ledger as a dict: ``since``, ``updated``, ``licensees`` -> counts."""
    f = read_json_document(Path(path), USAGE_FORMAT)
    lic = f.obj_("licensees")
    out: dict[str, Any] = {}
    for name in lic.obj:
        one = lic.obj_(name)
        req = one.obj_("requests")
        out[name] = {
            "requests": {k: req.int(k, lo=0) for k in req.obj},
            "rows": one.int("rows", lo=0),
        }
    return {
        "format": USAGE_FORMAT,
        "since": f.str("since"),
        "updated": f.str("updated") if f.has("updated") else "",
        "licensees": out,
    }


def _now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class LicenseeGate:
    """Authentication by token hash, per-licensee limits, counters and the usage ledger."""

    def __init__(
        self,
        tokens_file: Path,
        *,
        usage_file: Path | None = None,
        registry: CollectorRegistry | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.tokens_file = Path(tokens_file)
        self.usage_file = usage_file
        self._clock = clock
        self._lock = threading.Lock()
        self._table = TokenTable.load(self.tokens_file)
        self._stamp = self._file_stamp()
        self._checked = clock()
        self._accounts: dict[str, _Account] = {}
        self._since = _now_iso()
        self._dirty = False
        if usage_file is not None and Path(usage_file).is_file():
            ledger = read_usage(Path(usage_file))
            self._since = ledger["since"]
            for name, counts in ledger["licensees"].items():
                self._accounts[name] = _Account(dict(counts["requests"]), int(counts["rows"]))
        registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "encryip_licensee_requests",
            "Prediction requests per licensee by outcome (ok, error, refused)",
            ["licensee", "outcome"],
            registry=registry,
        )
        self.rows = Counter(
            "encryip_licensee_rows", "Rows predicted per licensee", ["licensee"], registry=registry
        )
        self._saver: threading.Thread | None = None
        self._stop = threading.Event()
        log.info(
            "licensee tokens: %d tokens for %d licensees from %s",
            len(self._table.by_hash), len(self._table.licensees), self.tokens_file,
        )  # fmt: skip

    # -- tokens ------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            st = self.tokens_file.stat()
        except OSError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self) -> bool:
        """Re-read the tokens file; on failure keep the table in force (False)."""
        stamp = self._file_stamp()
        try:
            table = TokenTable.load(self.tokens_file)
        except EncryIPError as exc:
            log.error("tokens file not reloaded, the previous one stays in force: %s", exc)
            self._stamp = stamp  # do not retry the same broken file every second
            return False
        with self._lock:
            self._table, self._stamp = table, stamp
        log.info("tokens file reloaded: %d licensees", len(table.licensees))
        return True

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._checked < _RELOAD_CHECK_S:
            return
        self._checked = now
        if self._file_stamp() != self._stamp:
            self.reload()

    def authenticate(self, authorization: str | bytes | None) -> str:
        """The licensee behind an ``Authorization: Bearer <token>`` value."""
        self._maybe_reload()
        if isinstance(authorization, bytes):
            authorization = authorization.decode("utf-8", "replace")
        if not authorization:
            raise UnauthenticatedError("missing bearer token")
        # "Bearer" exactly, as the shared-token mode (security.py) expects
        scheme, _, token = authorization.strip().partition(" ")
        if scheme != "Bearer" or not token.strip():
            raise UnauthenticatedError("invalid bearer token")
        name = self._table.by_hash.get(hash_token(token))
        if name is None:
            raise UnauthenticatedError("invalid bearer token")
        return name

    # -- limits and counts -------------------------------------------------------------

    def admit(self, licensee: str, rows: int) -> None:
        """Take one request of ``rows`` rows from the licensee's rate and quota, or refuse."""
        limits = self._table.limits.get(licensee)
        if limits is None:
            return
        with self._lock:
            acct = self._accounts.setdefault(licensee, _Account())
            if limits.rows_quota is not None and acct.rows + rows > limits.rows_quota:
                self._refuse(acct, licensee)
                raise LimitExceededError(
                    f"licensee {licensee!r} has used {acct.rows} of its {limits.rows_quota} "
                    f"rows this period; this request has {rows}"
                )
            if limits.requests_per_second is not None:
                rate = limits.requests_per_second
                burst = limits.burst or max(1, math.ceil(rate))
                now = self._clock()
                if acct.refilled == 0.0:
                    acct.tokens, acct.refilled = float(burst), now
                acct.tokens = min(float(burst), acct.tokens + (now - acct.refilled) * rate)
                acct.refilled = now
                if acct.tokens < 1.0:
                    wait = (1.0 - acct.tokens) / rate
                    self._refuse(acct, licensee)
                    raise LimitExceededError(
                        f"licensee {licensee!r} is over its rate limit of {rate:g} "
                        f"requests/s; retry in {wait:.2f} s",
                        retry_after_s=wait,
                    )
                acct.tokens -= 1.0

    def _refuse(self, acct: _Account, licensee: str) -> None:
        acct.requests["refused"] = acct.requests.get("refused", 0) + 1
        self.requests.labels(licensee=licensee, outcome="refused").inc()
        self._dirty = True

    def record(self, licensee: str, rows: int, *, ok: bool) -> None:
        """Count one finished prediction request (rows only when it succeeded)."""
        outcome = "ok" if ok else "error"
        with self._lock:
            acct = self._accounts.setdefault(licensee, _Account())
            acct.requests[outcome] = acct.requests.get(outcome, 0) + 1
            if ok:
                acct.rows += rows
            self._dirty = True
        self.requests.labels(licensee=licensee, outcome=outcome).inc()
        if ok and rows:
            self.rows.labels(licensee=licensee).inc(rows)

    def usage(self) -> dict[str, Any]:
        with self._lock:
            return {
                "format": USAGE_FORMAT,
                "since": self._since,
                "updated": _now_iso(),
                "licensees": {n: a.to_json() for n, a in sorted(self._accounts.items())},
            }

    # -- ledger ------------------------------------------------------------------------

    def save(self) -> None:
        if self.usage_file is None:
            return
        with self._lock:
            self._dirty = False
        try:
            write_json(Path(self.usage_file), self.usage())
        except OSError as exc:
            log.error("cannot write the usage file %s: %s", self.usage_file, exc.strerror)

    def start(self) -> None:
        if self.usage_file is None or self._saver is not None:
            return

        def loop() -> None:
            while not self._stop.wait(_SAVE_EVERY_S):
                if self._dirty:
                    self.save()

        self._saver = threading.Thread(target=loop, name="encryip-usage", daemon=True)
        self._saver.start()

    def close(self) -> None:
        self._stop.set()
        if self._saver is not None:
            self._saver.join(5)
            self._saver = None
        self.save()


def load_gate_problems(path: Path) -> list[str]:
    """Problems of a tokens file for config validation (empty when it loads)."""
    try:
        TokenTable.load(path)
    except FormatError as exc:
        return [f"--tokens-file: {exc}"]
    return []
