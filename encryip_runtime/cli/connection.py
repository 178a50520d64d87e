"""Flags shared by the commands that talk to a server (endpoint, TLS, token)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from encryip_runtime.client import EncryIPClient

__all__ = ["add_connection_arguments", "connect", "connect_or_fail"]


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument(
        "--endpoint",
        default=os.environ.get("ENCRYIP_ENDPOINT"),
        help="server HOST:PORT (gRPC), or a URL: grpc://, grpcs://, http:// or https:// "
        "(REST) HOST:PORT (env ENCRYIP_ENDPOINT)",
    )
    g.add_argument(
        "--protocol",
        choices=("encryip.v1", "v2"),
        default=None,
        help="over gRPC: encryip.v1 (default) or the Open Inference Protocol v2; REST is always v2",
    )
    g.add_argument(
        "--model",
        default="",
        help="model name (needed when the server serves a repository of several models)",
    )
    g.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    g.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS even to a non-loopback endpoint (the default there is TLS)",
    )
    g.add_argument("--ca-cert", type=Path, help="PEM root certificate(s) of the server (TLS)")
    g.add_argument("--client-cert", type=Path, help="PEM client certificate (mTLS)")
    g.add_argument("--client-key", type=Path, help="PEM client private key (mTLS)")
    g.add_argument(
        "--token-file", type=Path, help="file with the bearer token (or env ENCRYIP_TOKEN)"
    )
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")


def _read(path: Path | None, flag: str, problems: list[str]) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        problems.append(f"{flag}: cannot read '{path}': {exc.strerror}")
        return None


def connect(args: argparse.Namespace, problems: list[str]) -> EncryIPClient | None:
    """A client from the flags, or None with ``problems`` filled in."""
    from encryip_runtime.client import EncryIPClient

    if not args.endpoint:
        problems.append("--endpoint: missing (HOST:PORT, or set ENCRYIP_ENDPOINT)")
    ca = _read(args.ca_cert, "--ca-cert", problems)
    cert = _read(args.client_cert, "--client-cert", problems)
    key = _read(args.client_key, "--client-key", problems)
    if (args.client_cert is None) != (args.client_key is None):
        problems.append("--client-cert/--client-key: give both or neither")
    token = None
    raw = _read(args.token_file, "--token-file", problems)
    if raw is not None:
        token = raw.decode("utf-8", "replace").strip()
        if not token:
            problems.append(f"--token-file: '{args.token_file}' is empty")
    elif args.token_file is None:
        token = os.environ.get("ENCRYIP_TOKEN") or None
    if args.plaintext and (args.tls or args.ca_cert or args.client_cert):
        problems.append("--plaintext: contradicts --tls/--ca-cert/--client-cert")
    if args.timeout <= 0:
        problems.append(f"--timeout: must be positive (got {args.timeout})")
    if problems:
        return None
    try:
        return EncryIPClient(
            args.endpoint,
            root_certificates=ca,
            client_cert=cert,
            client_key=key,
            token=token,
            timeout=args.timeout,
            tls=True if (args.tls or ca or cert) else (False if args.plaintext else None),
            protocol=args.protocol,
            model_name=args.model,
        )
    except ValueError as exc:
        problems.append(f"--endpoint: {exc}")
        return None


def connect_or_fail(args: argparse.Namespace) -> EncryIPClient:
    """A client from the flags; ``UsageError`` listing every problem otherwise."""
    from encryip_runtime.cli.errors import UsageError

    problems: list[str] = []
    client = connect(args, problems)
    if client is None:
        raise UsageError(problems)
    return client
