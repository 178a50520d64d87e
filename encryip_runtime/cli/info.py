"""``encryip info --endpoint HOST:PORT``: what the server serves (all public)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from encryip_runtime.cli.connection import add_connection_arguments, connect_or_fail
from encryip_runtime.cli.errors import CommandError
from encryip_runtime.cli.options import add_command

NAME = "info"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, NAME, parents, run, "show the served model's public info")
    add_connection_arguments(p)
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.client import RemoteError

    with connect_or_fail(args) as client:
        try:
            info = client.info()
        except RemoteError as exc:
            raise CommandError(str(exc)) from None
    if args.json:
        json.dump(info.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    shape = ", ".join("N" if d < 0 else str(d) for d in info.input_shape)
    lines = [
        f"model:            {info.model_name}",
        f"profile:          {info.profile} ({info.group})",
        f"classes:          {info.num_classes}: {', '.join(info.class_names)}",
        f"input:            {info.input_name} {info.input_dtype}[{shape}]",
        f"ciphertext size:  {info.ciphertext_size} bytes",
        f"manifest digest:  {info.manifest_digest}",
        f"pk.g1:            {info.pk[0]}",
        f"pk.g2:            {info.pk[1]}",
        f"pk.h:             {info.pk[2]}",
        f"runtime version:  {info.runtime_version}",
        f"crypto backend:   {info.crypto_backend or 'not reported'}",
    ]
    print("\n".join(lines))
    return 0
