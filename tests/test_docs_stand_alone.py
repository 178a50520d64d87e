"""The project's docs stand alone: nothing points at a design file outside the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_no_reference_to_an_outside_design_file() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    needle = "DESIGN" + ".md"  # spelt in two parts so this file does not match itself
    hits = []
    for name in files:
        path = REPO / name
        if path.suffix not in {".py", ".md", ".proto", ".toml", ".yaml", ".sh", ".c", ""}:
            continue
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if needle in text or "DESIGN" + " §" in text:
            hits.append(name)
    assert not hits, f"point to docs/design.md instead: {hits}"
    assert (REPO / "docs" / "design.md").is_file()
