"""Server configuration: the one place where flags and environment become settings.

Every setting is a flag of ``encryip serve`` and an environment variable
``ENCRYIP_<FLAG_UPPER_SNAKE>`` (``--max-batch`` <-> ``ENCRYIP_MAX_BATCH``); a flag wins
over the environment, the environment over the default. The release directory is the
positional argument or ``ENCRYIP_RELEASE_DIR``.

========================  =====================  ==========================================
flag                      default                meaning
========================  =====================  ==========================================
``--host``                ``0.0.0.0``            address to bind (main and health ports)
``--port``                ``8001``               gRPC port (0 = pick a free one)
``--http-port``           ``8000``               Open Inference Protocol v2 REST port
                                                 (0 = off); same TLS, token and limits
``--cors-origin``         off                    browser origins allowed to call the REST
                                                 port (comma-separated, or ``*``)
``--health-port``         ``8081``               plaintext gRPC port with only
                                                 grpc.health.v1 (0 = off)
``--metrics-port``        ``9090``               Prometheus ``/metrics`` over HTTP (0 = off)
``--model-name``          manifest's name        name the model is served under
``--max-batch``           ``32``                 most rows in one onnxruntime call
``--max-queue-delay-ms``  ``5``                  longest a partial batch waits for more
                                                 rows while another batch runs
``--batch-threads``       ``2``                  batches run at once, each on its own
                                                 thread (network, then SampDist)
``--max-queue``           ``1024``               queued requests before RESOURCE_EXHAUSTED
``--max-message-bytes``   ``16777216``           gRPC message limit, both directions
``--intra-op-threads``    ``0``                  onnxruntime threads (0 = its default)
``--tls-cert/--tls-key``  off                    PEM server certificate and key (TLS)
``--tls-client-ca``       off                    PEM CA; clients must present a cert (mTLS)
``--token-file``          off                    file with the bearer token clients send
``--drain-seconds``       ``20``                 grace for in-flight requests on SIGTERM
``--reload-poll-seconds``  ``0``                 poll the release for changes (0 = off;
                                                 SIGHUP always reloads)
``--reroll-pool``         ``0``                  secure profile: SampDist re-randomisers
                                                 (g1^r, g2^r, h^r) precomputed in the
                                                 background, each used once (0 = off)
``--crypto-threads``      ``1``                  threads sharing one batch's SampDist
                                                 (not used with ``--reroll-pool``, whose
                                                 path is additions only)
``--max-connection-age-seconds``
                          ``300``                close client connections (GOAWAY) after
                                                 this age so clients re-balance after a
                                                 scale-out (0 = unlimited); in-flight
                                                 calls get ``--drain-seconds`` to finish
``--log-level``           ``INFO``               DEBUG, INFO, WARNING, ERROR
========================  =====================  ==========================================
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encryip_runtime.exceptions import EncryIPError

__all__ = ["ENV_PREFIX", "ConfigError", "ServerConfig"]

ENV_PREFIX = "ENCRYIP_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(EncryIPError):
    """Invalid server settings; ``problems`` lists every one of them."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one ``encryip serve`` process (see the module docstring for flags)."""

    release_dir: Path
    host: str = "0.0.0.0"
    port: int = 8001
    # Open Inference Protocol v2 over HTTP/REST (KServe's and Triton's default 8000); 0 = off.
    http_port: int = 8000
    # Origins a browser may call the REST port from (comma-separated, "*" = any); None = no CORS.
    cors_origin: str | None = None
    health_port: int = 8081
    metrics_port: int = 9090
    # None: the manifest's model_name.
    model_name: str | None = None
    max_batch: int = 32
    max_queue_delay_ms: float = 5.0
    max_queue: int = 1024
    # Two: one batch's crypto runs while the next one's network does (both release the GIL).
    batch_threads: int = 2
    max_message_bytes: int = 16 * 1024 * 1024
    # 0: onnxruntime's default.
    intra_op_threads: int = 0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    token_file: Path | None = None
    drain_seconds: float = 20.0
    # 0: no polling; SIGHUP always reloads.
    reload_poll_seconds: float = 0.0
    # Secure profile: precomputed SampDist re-randomisers, each used once; 0 = off.
    # Off by default: with the native backend a whole SampDist costs less CPU than the
    # pool's additions, and a refill competing for cores made p99 spikes (docs/deploy.md).
    reroll_pool: int = 0
    # Threads sharing one batch's SampDist (the C code releases the GIL). 1 on small pods;
    # more where inference is fast (GPU) and crypto becomes the bottleneck.
    crypto_threads: int = 1
    # GOAWAY after this many seconds so clients reconnect through the load balancer; 0 = off.
    # benchmarks/serving.py measured no throughput cost even at 1 s, so 300 s is on by default.
    max_connection_age_seconds: float = 300.0
    log_level: str = "INFO"

    # -- construction ------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add every setting as a flag. Defaults stay None so the env can fill them."""
        parser.add_argument(
            "release_dir",
            nargs="?",
            metavar="RELEASE_DIR",
            help="release or licensee directory with model.onnx + manifest.json "
            f"(env {ENV_PREFIX}RELEASE_DIR)",
        )
        for f in dataclasses.fields(cls):
            if f.name == "release_dir":
                continue
            flag = "--" + f.name.replace("_", "-")
            env = ENV_PREFIX + f.name.upper()
            default = f.default
            shown = "the manifest's model_name" if default is None else default
            if f.name in ("tls_cert", "tls_key", "tls_client_ca", "token_file", "cors_origin"):
                shown = "off"
            parser.add_argument(
                flag,
                dest=f.name,
                default=None,
                metavar=f.name.upper(),
                help=f"{_HELP[f.name]} (env {env}; default {shown})",
            )

    @classmethod
    def from_namespace(
        cls, ns: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> ServerConfig:
        """Merge parsed flags (win) with the environment; raise ConfigError listing all problems."""
        env = os.environ if environ is None else environ
        problems: list[str] = []
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw: str | None = getattr(ns, f.name, None)
            source = "--" + f.name.replace("_", "-") if f.name != "release_dir" else "RELEASE_DIR"
            if raw is None:
                env_name = ENV_PREFIX + f.name.upper()
                if env.get(env_name, "") != "":
                    raw, source = env[env_name], env_name
            if raw is None:
                continue
            try:
                values[f.name] = _PARSERS[f.name](str(raw))
            except ValueError as exc:
                problems.append(f"{source}: {exc} (got {str(raw)!r})")
        if "release_dir" not in values and not any(p.startswith("RELEASE_DIR") for p in problems):
            problems.append(f"RELEASE_DIR: missing (argument or {ENV_PREFIX}RELEASE_DIR)")
        if problems:
            raise ConfigError(problems)
        cfg = cls(**values)
        cfg.validate()
        return cfg

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServerConfig:
        """Parse ``encryip serve`` arguments (without the subcommand) and the environment."""
        parser = argparse.ArgumentParser(prog="encryip serve")
        cls.add_arguments(parser)
        return cls.from_namespace(parser.parse_args(argv), environ)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerConfig:
        """Settings from the environment alone; keyword overrides win (for embedding, tests)."""
        ns = argparse.Namespace(**{k: str(v) for k, v in overrides.items() if v is not None})
        return cls.from_namespace(ns, environ)

    # -- checks ------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every inconsistency of these settings (empty when valid)."""
        out: list[str] = []
        if not self.release_dir.is_dir():
            out.append(f"RELEASE_DIR: not a directory: '{self.release_dir}'")
        for name in ("port", "http_port", "health_port", "metrics_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                out.append(f"--{name.replace('_', '-')}: must be in 0..65535 (got {value})")
        ports = (self.port, self.http_port, self.health_port, self.metrics_port)
        fixed = [p for p in ports if p != 0]
        if len(set(fixed)) != len(fixed):
            out.append(
                "--port/--http-port/--health-port/--metrics-port: must differ "
                f"(got {', '.join(map(str, ports))})"
            )
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                out.append(
                    f"--cors-origin: {origin!r} is not an origin (scheme://host[:port], or *)"
                )
        if self.cors_origin is not None and not self.cors_origins:
            out.append("--cors-origin: no origin given")
        positive = {
            "max_batch": self.max_batch,
            "max_queue": self.max_queue,
            "batch_threads": self.batch_threads,
            "max_message_bytes": self.max_message_bytes,
            "crypto_threads": self.crypto_threads,
        }
        for name, value in positive.items():
            if value < 1:
                out.append(f"--{name.replace('_', '-')}: must be at least 1 (got {value})")
        non_negative = {
            "max_queue_delay_ms": self.max_queue_delay_ms,
            "intra_op_threads": self.intra_op_threads,
            "drain_seconds": self.drain_seconds,
            "reload_poll_seconds": self.reload_poll_seconds,
            "reroll_pool": self.reroll_pool,
            "max_connection_age_seconds": self.max_connection_age_seconds,
        }
        for name, number in non_negative.items():
            if number < 0:
                out.append(f"--{name.replace('_', '-')}: must not be negative (got {number})")
        if (self.tls_cert is None) != (self.tls_key is None):
            out.append("--tls-cert/--tls-key: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            out.append("--tls-client-ca: needs --tls-cert and --tls-key (mTLS is on top of TLS)")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "token_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                out.append(f"--{name.replace('_', '-')}: no such file: '{path}'")
        if self.model_name is not None and not self.model_name.strip():
            out.append("--model-name: must not be empty")
        return out

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def cors_origins(self) -> tuple[str, ...]:
        """The allowed browser origins (empty: CORS off)."""
        if self.cors_origin is None:
            return ()
        return tuple(o.strip().rstrip("/") for o in self.cors_origin.split(",") if o.strip())

    @property
    def max_queue_delay_s(self) -> float:
        return self.max_queue_delay_ms / 1000.0

    def grpc_connection_options(self) -> list[tuple[str, int]]:
        """gRPC server options for ``--max-connection-age-seconds`` (empty when 0)."""
        if self.max_connection_age_seconds <= 0:
            return []
        return [
            ("grpc.max_connection_age_ms", max(1, round(self.max_connection_age_seconds * 1000))),
            ("grpc.max_connection_age_grace_ms", max(1, round(self.drain_seconds * 1000))),
        ]

    def read_token(self) -> bytes | None:
        """The bearer token (surrounding whitespace stripped), or None when auth is off."""
        if self.token_file is None:
            return None
        token = self.token_file.read_bytes().strip()
        if not token:
            raise ConfigError([f"--token-file: file is empty: '{self.token_file}'"])
        return token


def _int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError("not an integer") from None


def _float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


def _path(text: str) -> Path:
    if not text.strip():
        raise ValueError("empty path")
    return Path(text).expanduser()


def _text(text: str) -> str:
    return text.strip()


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


_PARSERS: dict[str, Callable[[str], Any]] = {
    "release_dir": _path,
    "host": _text,
    "port": _int,
    "http_port": _int,
    "cors_origin": _text,
    "health_port": _int,
    "metrics_port": _int,
    "model_name": _text,
    "max_batch": _int,
    "max_queue_delay_ms": _float,
    "max_queue": _int,
    "batch_threads": _int,
    "max_message_bytes": _int,
    "intra_op_threads": _int,
    "tls_cert": _path,
    "tls_key": _path,
    "tls_client_ca": _path,
    "token_file": _path,
    "drain_seconds": _float,
    "reload_poll_seconds": _float,
    "reroll_pool": _int,
    "crypto_threads": _int,
    "max_connection_age_seconds": _float,
    "log_level": _log_level,
}

_HELP: dict[str, str] = {
    "host": "address to bind",
    "port": "gRPC port, 0 picks a free one",
    "http_port": "Open Inference Protocol v2 REST (HTTP/1.1) port, 0 = off",
    "cors_origin": "browser origins allowed to call the REST port, comma-separated or *",
    "health_port": "plaintext gRPC port serving only grpc.health.v1 (Kubernetes probes), 0 = off",
    "metrics_port": "Prometheus /metrics HTTP port, 0 = off",
    "model_name": "name the model is served under",
    "max_batch": "most rows per onnxruntime call",
    "max_queue_delay_ms": "longest wait (ms) of a partial batch for more rows while "
    "another batch runs",
    "max_queue": "queued requests before RESOURCE_EXHAUSTED",
    "batch_threads": "batches run at once, each on its own thread (network, then SampDist)",
    "max_message_bytes": "largest gRPC message, both directions",
    "intra_op_threads": "onnxruntime intra-op threads, 0 = its default",
    "tls_cert": "PEM certificate chain of the server (enables TLS)",
    "tls_key": "PEM private key of the server",
    "tls_client_ca": "PEM CA bundle; clients must present a certificate it signed (mTLS)",
    "token_file": "file holding the bearer token clients must send",
    "drain_seconds": "seconds in-flight requests get on SIGTERM",
    "reload_poll_seconds": "poll model.onnx/manifest.json for changes every N s, 0 = off",
    "reroll_pool": "secure profile: SampDist re-randomisers precomputed in the background "
    "(each used once), 0 = off",
    "crypto_threads": "threads sharing one batch's SampDist "
    "(more when inference is fast, e.g. on a GPU; not used with --reroll-pool)",
    "max_connection_age_seconds": "send clients GOAWAY after this many seconds so they "
    "re-balance across replicas, 0 = unlimited",
    "log_level": "log level",
}
