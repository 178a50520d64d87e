"""``encryip health --endpoint HOST:PORT``: is the server alive, is it ready?

Readiness (the default): exit 0 when grpc.health.v1 says SERVING for ``--service``
("" = the whole server), 1 when it answers NOT_SERVING (loading, draining) or does not
answer. ``--live``: exit 0 whenever the server answers at all (a draining server is
alive but not ready). Works against the main port and the plaintext ``--health-port``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from encryip_runtime.cli.connection import add_connection_arguments, connect_or_fail
from encryip_runtime.cli.errors import CommandError, UsageError
from encryip_runtime.cli.options import add_command

NAME = "health"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    summary = "liveness / readiness of a server (exit 0 = ready, or alive with --live)"
    p = add_command(subparsers, NAME, parents, run, summary, doc=__doc__)
    add_connection_arguments(p)
    p.add_argument(
        "--service",
        default="",
        help='health service name ("" = the whole server; also encryip.v1.EncryIP, '
        "inference.GRPCInferenceService)",
    )
    p.add_argument("--live", action="store_true", help="liveness: any answer is a success")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.client import RemoteError

    with connect_or_fail(args) as client:
        try:
            status = client.health(args.service)
        except RemoteError as exc:
            if exc.code == "NOT_FOUND":
                raise UsageError(
                    f"--service: the server has no health service {args.service!r}"
                ) from None
            raise CommandError(f"not alive: {exc}") from None
    ready = status == "SERVING"
    ok = True if args.live else ready
    if args.json:
        doc = {"endpoint": client.endpoint, "service": args.service, "status": status}
        sys.stdout.write(json.dumps({**doc, "live": True, "ready": ready}) + "\n")
    else:
        sys.stdout.write(f"{client.endpoint}: {status} ({'ready' if ready else 'not ready'})\n")
    return 0 if ok else 1
