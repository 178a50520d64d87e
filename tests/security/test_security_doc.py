"""docs/security.md names a test for each claim: every one it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_referenced_test_exists() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    missing: list[str] = []
    count = 0
    for line in doc.splitlines():
        current: str | None = None
        for token in re.finditer(
            r"`(tests/[\w/]+\.py)(?:::(\w+))?|`::(\w+)|`(benchmarks/\w+\.py)", line
        ):
            path, name, cont, bench = token.groups()
            if bench:
                count += 1
                if not (ROOT / bench).is_file():
                    missing.append(bench)
                continue
            if path:
                current = path
                count += 1
                if not (ROOT / path).is_file():
                    missing.append(path)
                    continue
            test = name or cont
            if test and current:
                source = (ROOT / current).read_text()
                if not re.search(rf"^def {test}\(", source, re.M):
                    missing.append(f"{current}::{test}")
    assert count > 40
    assert not missing, missing
