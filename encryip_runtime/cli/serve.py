"""``encryip serve DIR``: run the runtime, gRPC and REST (flags or ENCRYIP_* environment).

DIR is a release or licensee directory (one model) or a model repository
``DIR/<model>/<version>/`` (every model, latest version)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from encryip_runtime.cli.errors import CommandError, UsageError
from encryip_runtime.cli.options import add_command

NAME = "serve"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    from encryip_runtime.server.config import ServerConfig

    p = add_command(
        subparsers,
        NAME,
        parents,
        run,
        "serve a release, licensee directory or model repository over gRPC and REST",
        description="Serve confused labels (encryip.v1 + Open Inference Protocol v2 over "
        "gRPC and REST + grpc.health.v1). RELEASE_DIR may also be a model repository "
        "DIR/<model>/<version>/. Every flag can also be set as ENCRYIP_<FLAG_UPPER_SNAKE>; "
        "flags win. SIGTERM drains, SIGHUP reloads the models.",
    )
    ServerConfig.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.exceptions import FormatError, ModelError
    from encryip_runtime.server.app import serve
    from encryip_runtime.server.config import ConfigError, ServerConfig

    try:
        cfg = ServerConfig.from_namespace(args)
    except ConfigError as exc:
        raise UsageError(exc.problems) from None
    level = "DEBUG" if args.debug else cfg.log_level
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        return serve(cfg)
    except (FormatError, ModelError) as exc:
        raise CommandError(f"cannot load the model: {exc}") from None
    except OSError as exc:
        raise CommandError(f"cannot start: {exc}") from None
