"""``encryip tokens add|revoke|list --tokens-file F``: per-licensee bearer tokens.

The file keeps only SHA-256 hashes; ``add`` prints the new token once, on stdout. A
running server picks the change up by itself (it re-reads the file when it changes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from encryip_runtime.cli.errors import CommandError, UsageError
from encryip_runtime.cli.options import add_command

NAME = "tokens"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        subparsers, NAME, parents, run, "issue, revoke and list per-licensee bearer tokens"
    )
    sub = p.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", parents=parents, help="issue a token to a licensee (printed once)")
    add.add_argument("name", help="licensee name")
    add.add_argument("--requests-per-second", type=float, help="rate limit of this licensee")
    add.add_argument("--burst", type=int, help="requests allowed at once (token bucket size)")
    add.add_argument("--rows-quota", type=int, help="rows per usage ledger (billing period)")
    rev = sub.add_parser("revoke", parents=parents, help="remove every token of a licensee")
    rev.add_argument("name", help="licensee name")
    ls = sub.add_parser("list", parents=parents, help="licensees, token counts and limits")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    for q in (add, rev, ls):
        q.add_argument("--tokens-file", type=Path, required=True, help="the server's tokens file")


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.exceptions import EncryIPError
    from encryip_runtime.formats.jsonio import write_json
    from encryip_runtime.server.licensees import Limits, TokenTable, hash_token

    path: Path = args.tokens_file
    try:
        table = TokenTable.load(path) if path.exists() else TokenTable({}, {})
    except EncryIPError as exc:
        raise CommandError(str(exc)) from None
    if args.tokens_command == "list":
        doc = {
            name: {
                "tokens": sum(1 for n in table.by_hash.values() if n == name),
                "limits": table.limits[name].to_json() if name in table.limits else {},
            }
            for name in table.licensees
        }
        if args.json:
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            for name, row in doc.items():
                sys.stdout.write(f"{name}: {row['tokens']} token(s) {row['limits'] or ''}\n")
        return 0
    name = args.name.strip()
    if not name or not name.isprintable() or len(name) > 128:
        raise UsageError(f"name: bad licensee name {args.name!r}")
    by_hash, limits = dict(table.by_hash), dict(table.limits)
    if args.tokens_command == "revoke":
        if name not in table.licensees:
            raise CommandError(f"{path}: no tokens for licensee {name!r}")
        by_hash = {h: n for h, n in by_hash.items() if n != name}
        limits.pop(name, None)
        write_json(path, TokenTable(by_hash, limits).to_json(), secret=True)
        sys.stderr.write(f"revoked every token of {name!r}\n")
        return 0
    problems = []
    if args.requests_per_second is not None and not args.requests_per_second > 0:
        problems.append(f"--requests-per-second: must be positive (got {args.requests_per_second})")
    if args.burst is not None and args.burst < 1:
        problems.append(f"--burst: must be at least 1 (got {args.burst})")
    if args.rows_quota is not None and args.rows_quota < 0:
        problems.append(f"--rows-quota: must not be negative (got {args.rows_quota})")
    if problems:
        raise UsageError(problems)
    import secrets

    token = secrets.token_urlsafe(32)
    by_hash[hash_token(token)] = name
    if any(v is not None for v in (args.requests_per_second, args.burst, args.rows_quota)):
        limits[name] = Limits(args.requests_per_second, args.burst, args.rows_quota)
    write_json(path, TokenTable(by_hash, limits).to_json(), secret=True)
    sys.stdout.write(token + "\n")
    sys.stderr.write(f"issued a token to {name!r}: give it to the licensee; it is not stored\n")
    return 0
