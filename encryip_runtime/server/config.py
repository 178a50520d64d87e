"""Server configuration: the one place where flags and environment become settings.

Every setting is a field of :class:`ServerConfig` whose metadata (:func:`setting`) carries
its parser, its help text and how its default is shown. From that one declaration come the
flag of ``encryip serve`` (``--max-batch``), the environment variable ``ENCRYIP_<NAME>``
(``ENCRYIP_MAX_BATCH``) and the flags table of docs/deploy.md (:func:`flags_table`;
``python -m encryip_runtime.server.config --write-docs`` rewrites it and a test keeps the
two equal). A flag wins over the environment, the environment over the default. The
release directory is the positional argument or ``ENCRYIP_RELEASE_DIR``.

To add a setting: add a field with ``= setting(default, parser, "help")``, check it in
:meth:`ServerConfig.problems` if needed, and rerun the docs writer.
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

__all__ = ["ENV_PREFIX", "ConfigError", "ServerConfig", "flags_table", "setting"]

ENV_PREFIX = "ENCRYIP_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(EncryIPError):
    """Invalid server settings; ``problems`` lists every one of them."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def _int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError("not an integer") from None


def _threads_or_auto(text: str) -> int:
    """A thread count >= 1, or ``auto`` (0: sized at start from the free cores)."""
    if text.strip().lower() == "auto":
        return 0
    value = _int(text)
    if value < 1:
        raise ValueError("must be at least 1, or auto")
    return value


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


def _one_of(choices: tuple[str, ...], case: Callable[[str], str]) -> Callable[[str], str]:
    """A parser of one of ``choices``, in any case (``case``: str.upper or str.lower)."""

    def parse(text: str) -> str:
        value = case(text.strip())
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


_log_level = _one_of(LOG_LEVELS, str.upper)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean (true/false, 1/0, yes/no, on/off)")


MODEL_CONTROL_MODES = ("none", "explicit")


_model_control = _one_of(MODEL_CONTROL_MODES, str.lower)


def env_name(field_name: str) -> str:
    """``max_batch`` -> ``ENCRYIP_MAX_BATCH``."""
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    """``max_batch`` -> ``--max-batch``."""
    return "--" + field_name.replace("_", "-")


def _override_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def setting(
    default: Any,
    parse: Callable[[str], Any],
    help: str,
    *,
    shown: str | None = None,
    flag: bool = False,
) -> Any:
    """A ServerConfig field: ``parse`` turns flag/env text into the value; ``help`` is the
    one description used by ``--help`` and docs/deploy.md; ``shown`` is the default as the
    docs show it (else ``default``); ``flag=True`` makes a switch (``--x`` = true)."""
    meta = {"parse": parse, "help": help, "shown": shown, "switch": flag}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one ``encryip serve`` process (see the module docstring)."""

    release_dir: Path = dataclasses.field(
        metadata={
            "parse": _path,
            "help": "release or licensee directory with model.onnx + manifest.json",
            "shown": "required",
            "switch": False,
        }
    )
    host: str = setting("0.0.0.0", _text, "address to bind (main and health ports)")
    port: int = setting(8001, _int, "gRPC port (0 = pick a free one)")
    # On by default where KServe and Triton users look for it (8000).
    http_port: int = setting(
        8000,
        _int,
        "Open Inference Protocol v2 REST (HTTP/1.1) port, 0 = off; same TLS, token, "
        "limits and drain as the gRPC port",
    )
    cors_origin: str | None = setting(
        None,
        _text,
        "browser origins allowed to call the REST port (comma-separated, or *)",
        shown="off",
    )
    health_port: int = setting(
        8081,
        _int,
        "plaintext gRPC port serving only grpc.health.v1 (Kubernetes probes), 0 = off",
    )
    metrics_port: int = setting(9090, _int, "Prometheus /metrics HTTP port, 0 = off")
    model_name: str | None = setting(
        None,
        _text,
        "name the model is served under (a single release; a repository names its models "
        "by directory)",
        shown="the manifest's model_name",
    )
    model_control: str = setting(
        "none",
        _model_control,
        "model repository: 'explicit' lets clients load and unload models (repository "
        "extension, gRPC and REST); 'none' serves what loaded at start (index only)",
    )
    max_batch: int = setting(32, _int, "most rows in one onnxruntime call")
    max_queue_delay_ms: float = setting(
        5.0, _float, "longest wait (ms) of a partial batch for more rows while another batch runs"
    )
    max_queue: int = setting(1024, _int, "queued requests before RESOURCE_EXHAUSTED")
    # Two: one batch's crypto runs while the next one's network does (both release the GIL).
    batch_threads: int = setting(
        2, _int, "batches run at once, each on its own thread (network, then SampDist)"
    )
    max_message_bytes: int = setting(
        16 * 1024 * 1024, _int, "largest gRPC message, both directions"
    )
    intra_op_threads: int = setting(0, _int, "onnxruntime intra-op threads, 0 = its default")
    tls_cert: Path | None = setting(
        None, _path, "PEM certificate chain of the server (enables TLS)", shown="off"
    )
    tls_key: Path | None = setting(None, _path, "PEM private key of the server", shown="off")
    tls_client_ca: Path | None = setting(
        None,
        _path,
        "PEM CA bundle; clients must present a certificate it signed (mTLS)",
        shown="off",
    )
    token_file: Path | None = setting(
        None, _path, "file holding the bearer token clients must send", shown="off"
    )
    tokens_file: Path | None = setting(
        None,
        _path,
        "JSON file of per-licensee bearer tokens (SHA-256 hashes -> licensee, optional rate "
        "limits and row quotas); re-read when it changes",
        shown="off",
    )
    usage_file: Path | None = setting(
        None,
        _path,
        "JSON ledger of per-licensee requests and rows (with --tokens-file), kept across "
        "restarts; read by `encryip usage`",
        shown="off",
    )
    allow_insecure_token: bool = setting(
        False,
        _bool,
        "allow --token-file/--tokens-file without TLS (the token then crosses the network "
        "in clear); "
        "without it the server refuses to start",
        flag=True,
    )
    drain_seconds: float = setting(
        20.0, _float, "grace (s) for in-flight requests on SIGTERM; streams end at once"
    )
    reload_poll_seconds: float = setting(
        0.0,
        _float,
        "poll model.onnx/manifest.json for changes every N s, 0 = off (SIGHUP always reloads)",
    )
    # Off by default: with the native backend a whole SampDist costs less CPU than the
    # pool's additions, and a refill competing for cores made p99 spikes (docs/deploy.md).
    reroll_pool: int = setting(
        0,
        _int,
        "secure profile: SampDist re-randomisers precomputed in the background "
        "(each used once), 0 = off",
    )
    # The C code releases the GIL. auto: the cores onnxruntime's threads and the event loop
    # leave (1 on a small CPU pod, most of the cores on a GPU box); 0 stands for auto.
    crypto_threads: int = setting(
        0,
        _threads_or_auto,
        "threads sharing one batch's SampDist, or auto: the cores left after onnxruntime's "
        "threads and the event loop (batches under 32 rows stay on one thread; "
        "not used with --reroll-pool)",
        shown="auto",
    )
    # benchmarks/serving.py measured no throughput cost even at 1 s, so 300 s is on by default.
    max_connection_age_seconds: float = setting(
        300.0,
        _float,
        "send clients GOAWAY after this many seconds so they re-balance across replicas "
        "(0 = unlimited); in-flight calls get --drain-seconds to finish",
    )
    log_level: str = setting("INFO", _log_level, "log level: " + ", ".join(LOG_LEVELS[:4]))

    # -- construction ------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add every setting as a flag. Defaults stay None so the env can fill them."""
        for f in dataclasses.fields(cls):
            if f.name == "release_dir":
                parser.add_argument(
                    "release_dir",
                    nargs="?",
                    metavar="RELEASE_DIR",
                    help=f"{f.metadata['help']} (env {env_name(f.name)})",
                )
                continue
            help_text = f"{f.metadata['help']} (env {env_name(f.name)}; default {_shown(f)})"
            if f.metadata["switch"]:
                parser.add_argument(
                    flag_name(f.name),
                    dest=f.name,
                    action="store_const",
                    const="true",
                    default=None,
                    help=help_text,
                )
            else:
                parser.add_argument(
                    flag_name(f.name),
                    dest=f.name,
                    default=None,
                    metavar=f.name.upper(),
                    help=help_text,
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
            source = flag_name(f.name) if f.name != "release_dir" else "RELEASE_DIR"
            if raw is None:
                name = env_name(f.name)
                if env.get(name, "") != "":
                    raw, source = env[name], name
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](str(raw))
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
        ns = argparse.Namespace(
            **{k: _override_text(v) for k, v in overrides.items() if v is not None}
        )
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
            "crypto_threads": self.crypto_threads,
            "max_connection_age_seconds": self.max_connection_age_seconds,
        }
        for name, number in non_negative.items():
            if number < 0:
                out.append(f"--{name.replace('_', '-')}: must not be negative (got {number})")
        if (self.tls_cert is None) != (self.tls_key is None):
            out.append("--tls-cert/--tls-key: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            out.append("--tls-client-ca: needs --tls-cert and --tls-key (mTLS is on top of TLS)")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "token_file", "tokens_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                out.append(f"--{name.replace('_', '-')}: no such file: '{path}'")
        if self.token_file is not None and self.tokens_file is not None:
            out.append("--token-file/--tokens-file: give one (a shared token, or per licensee)")
        if self.tokens_file is not None and self.tokens_file.is_file():
            from encryip_runtime.server.licensees import load_gate_problems

            out += load_gate_problems(self.tokens_file)
        if self.usage_file is not None and self.tokens_file is None:
            out.append("--usage-file: needs --tokens-file (usage is counted per licensee)")
        if self.usage_file is not None and not self.usage_file.parent.is_dir():
            out.append(f"--usage-file: no such directory: '{self.usage_file.parent}'")
        if self.tokens_file is not None and not self.tls and not self.allow_insecure_token:
            out.append(
                "--tokens-file: without TLS the bearer tokens cross the network in clear; "
                "add --tls-cert/--tls-key, or --allow-insecure-token to accept that"
            )
        if self.token_file is not None and not self.tls and not self.allow_insecure_token:
            out.append(
                "--token-file: without TLS the bearer token crosses the network in clear; "
                "add --tls-cert/--tls-key, or --allow-insecure-token to accept that "
                "(e.g. TLS ends at a proxy in the same pod)"
            )
        if self.model_name is not None and not self.model_name.strip():
            out.append("--model-name: must not be empty")
        from encryip_runtime.server.model_store import is_repository

        if self.release_dir.is_dir() and is_repository(self.release_dir):
            if self.model_name is not None:
                out.append(
                    "--model-name: not with a model repository (its models are named by "
                    f"their directories under '{self.release_dir}')"
                )
        elif self.model_control == "explicit":
            out.append(
                "--model-control explicit: needs a model repository "
                "(RELEASE_DIR/<model>/<version>/ with model.onnx + manifest.json)"
            )
        if self.model_control == "explicit" and self.tokens_file is not None:
            # Every licensee token would pass: any licensee could unload every model.
            out.append(
                "--model-control explicit: not with --tokens-file (any licensee could load "
                "and unload models); use --token-file (one operator token) for explicit mode"
            )
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


def _shown(f: dataclasses.Field[Any]) -> str:
    if f.metadata["shown"] is not None:
        return str(f.metadata["shown"])
    if isinstance(f.default, bool):
        return "off"
    return str(f.default)


DOCS_BEGIN = "<!-- flags table: generated from encryip_runtime/server/config.py -->"
DOCS_END = "<!-- end of flags table -->"


def flags_table() -> str:
    """The Markdown table of every setting, as docs/deploy.md shows it."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(ServerConfig):
        flag = f"`{flag_name(f.name)}`" if f.name != "release_dir" else "`RELEASE_DIR` (argument)"
        help_text = f.metadata["help"].replace("|", "\\|")
        rows.append(f"| {flag} | `{env_name(f.name)}` | {_shown(f)} | {help_text} |")
    return "\n".join(rows) + "\n"


def render_docs(text: str) -> str:
    """``text`` (docs/deploy.md) with the part between the markers replaced by the table."""
    begin, end = text.index(DOCS_BEGIN), text.index(DOCS_END)
    return text[: begin + len(DOCS_BEGIN)] + "\n\n" + flags_table() + "\n" + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m encryip_runtime.server.config --write-docs [docs/deploy.md]``."""
    parser = argparse.ArgumentParser(prog="python -m encryip_runtime.server.config")
    parser.add_argument("--write-docs", metavar="PATH", nargs="?", const="docs/deploy.md")
    args = parser.parse_args(argv)
    if args.write_docs is None:
        print(flags_table(), end="")
        return 0
    path = Path(args.write_docs)
    path.write_text(render_docs(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
