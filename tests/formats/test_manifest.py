"""manifest.json (encryip-manifest/1): every field validated; errors name file and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from encryip_runtime.formats import Manifest
from encryip_runtime.formats.common import pk_fingerprint

from .corrupt import DELETE, Corruption, expect_format_error, write_corrupted


def _bad_element(old: Any) -> Any:
    return 0 if isinstance(old, int) else "ec" + "ff" * 30 + "7f"


def _other_element(old: Any) -> Any:
    """A valid element different from ``old`` (the fingerprint will then mismatch)."""
    if isinstance(old, int):
        return 2 if old != 2 else 3  # not the identity (1): that is refused on its own
    return "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76"


def _not_generator(old: Any) -> Any:
    """A valid element that is not g1: the identity (paper) or [2]B (secure)."""
    if isinstance(old, int):
        return 1
    return "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919"


def _flip_hex(old: str) -> str:
    return ("1" if old[0] != "1" else "2") + old[1:]


CASES = [
    Corruption("format-missing", ("format",), DELETE, "format"),
    Corruption("format-other-file", ("format",), "encryip-key/1", "format"),
    Corruption("format-version", ("format",), "encryip-manifest/2", "format"),
    Corruption("format-type", ("format",), 1, "format"),
    Corruption("version-type", ("encryip_version",), 5, "encryip_version"),
    Corruption("profile-missing", ("profile",), DELETE, "profile"),
    Corruption("profile-unknown", ("profile",), "fast", "profile"),
    Corruption("profile-type", ("profile",), ["secure"], "profile"),
    Corruption("group-mismatch", ("group",), "Zp*(p=13)", "group"),
    Corruption("group-type", ("group",), 11, "group"),
    Corruption("k-missing", ("num_classes",), DELETE, "num_classes"),
    Corruption("k-string", ("num_classes",), "10", "num_classes"),
    Corruption("k-bool", ("num_classes",), True, "num_classes"),
    Corruption("k-float", ("num_classes",), 10.0, "num_classes"),
    Corruption("k-one", ("num_classes",), 1, "num_classes"),
    Corruption("k-huge", ("num_classes",), 10**9, "num_classes"),
    Corruption("names-missing", ("class_names",), DELETE, "class_names"),
    Corruption("names-type", ("class_names",), "a,b", "class_names"),
    Corruption("names-short", ("class_names",), lambda v: v[:-1], "class_names"),
    Corruption("names-item", ("class_names", 3), 3, "class_names[3]"),
    Corruption("pk-missing", ("pk",), DELETE, "pk"),
    Corruption("pk-type", ("pk",), [1, 2, 3], "pk"),
    Corruption("pk-g2-missing", ("pk", "g2"), DELETE, "pk.g2"),
    Corruption("pk-h-invalid", ("pk", "h"), _bad_element, "pk.h"),
    Corruption("pk-g2-invalid", ("pk", "g2"), _bad_element, "pk.g2"),
    Corruption("pk-g1-not-generator", ("pk", "g1"), lambda v: _not_generator(v), "pk.g1"),
    Corruption("pk-h-swapped", ("pk", "h"), _other_element, "pk_fingerprint"),
    Corruption("fingerprint-mismatch", ("pk_fingerprint",), _flip_hex, "pk_fingerprint"),
    Corruption("fingerprint-type", ("pk_fingerprint",), 7, "pk_fingerprint"),
    Corruption("input-missing", ("input",), DELETE, "input"),
    Corruption("input-name-missing", ("input", "name"), DELETE, "input.name"),
    Corruption("input-name-type", ("input", "name"), 0, "input.name"),
    Corruption("input-dtype", ("input", "dtype"), "int7", "input.dtype"),
    Corruption("input-shape-rank", ("input", "shape"), [None, 1, 8], "input.shape"),
    Corruption("input-shape-batch", ("input", "shape", 0), 5, "input.shape"),
    Corruption("input-shape-zero", ("input", "shape", 2), 0, "input.shape[2]"),
    Corruption("input-shape-type", ("input", "shape", 1), "1", "input.shape[1]"),
    Corruption("input-shape-huge", ("input", "shape", 3), 1 << 20, "input.shape[3]"),
    Corruption("output-missing", ("output",), DELETE, "output"),
    Corruption("output-name-missing", ("output", "name"), DELETE, "output.name"),
    Corruption("output-name-type", ("output", "name"), 3.5, "output.name"),
    Corruption("output-size-zero", ("output", "size"), 0, "output.size"),
    Corruption("output-size-type", ("output", "size"), "33", "output.size"),
    Corruption("output-size-paper", ("output", "size"), lambda v: v + 3, "output.size", ("paper",)),
    Corruption("output-size-secure", ("output", "size"), lambda v: v + 1, "codebook", ("secure",)),
    Corruption("model-missing", ("model",), DELETE, "model"),
    Corruption("model-file-traversal", ("model", "file"), "../model.onnx", "model.file"),
    Corruption("model-file-hidden", ("model", "file"), ".model.onnx", "model.file"),
    Corruption("model-file-type", ("model", "file"), None, "model.file"),
    Corruption("model-sha-short", ("model", "sha256"), "abc", "model.sha256"),
    Corruption("model-sha-upper", ("model", "sha256"), lambda v: v.upper(), "model.sha256"),
    Corruption("model-sha-nonhex", ("model", "sha256"), "z" * 64, "model.sha256"),
    Corruption("model-name-empty", ("model_name",), "", "model_name"),
    Corruption("model-name-long", ("model_name",), "m" * 129, "model_name"),
    Corruption("model-name-type", ("model_name",), 5, "model_name"),
    Corruption("licensee-type", ("licensee",), 5, "licensee"),
    Corruption("codebook-missing", ("codebook",), DELETE, "codebook", ("secure",)),
    Corruption("codebook-short", ("codebook",), lambda v: v[:-1], "codebook", ("secure",)),
    Corruption("codebook-row", ("codebook", 2), "u1u2u3", "codebook[2]", ("secure",)),
    Corruption("codebook-element", ("codebook", 4, 1), _bad_element, "codebook", ("secure",)),
    Corruption("codebook-bad-hex", ("codebook", 0, 2), "zz" * 32, "codebook", ("secure",)),
]


PARAMS = [(p, c) for c in CASES for p in c.profiles]


@pytest.mark.parametrize(("profile", "case"), PARAMS, ids=[f"{p}-{c.id}" for p, c in PARAMS])
def test_corrupt_field_is_named(
    profile: str, case: Corruption, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    release = request.getfixturevalue(f"{profile}_release")
    src = release.root / "manifest.json"
    Manifest.load(src)  # the pristine file loads
    path = write_corrupted(src, tmp_path, case)
    expect_format_error(Manifest.load, path, case.field)


ORDER_CASES = [
    Corruption("order-not-permutation", ("output_order",), lambda v: [0] * len(v), "output_order"),
    Corruption("order-short", ("output_order",), lambda v: v[:-1], "output_order"),
    Corruption("order-range", ("output_order", 0), 10_000, "output_order[0]"),
    Corruption("order-negative", ("output_order", 1), -1, "output_order[1]"),
    Corruption("order-type", ("output_order", 2), "1", "output_order[2]"),
]


@pytest.mark.parametrize("case", ORDER_CASES, ids=[c.id for c in ORDER_CASES])
def test_paper_licensee_output_order_validated(
    case: Corruption, paper_release: Any, tmp_path: Path
) -> None:
    src = paper_release.licensee_dir("acme") / "manifest.json"
    assert Manifest.load(src).output_order is not None
    expect_format_error(Manifest.load, write_corrupted(src, tmp_path, case), case.field)


def test_round_trip_and_digest(tiny_release: Any, tmp_path: Path) -> None:
    src = tiny_release.root / "manifest.json"
    m = Manifest.load(src)
    m.save(tmp_path / "manifest.json")
    again = Manifest.load(tmp_path / "manifest.json")
    assert again.to_json() == m.to_json() == json.loads(src.read_text())
    assert again.digest == m.digest
    assert m.pk_fingerprint == pk_fingerprint(m.scheme, m.pk)
    # any change to the content changes the digest
    assert m.with_changes(model_name="other").digest != m.digest


def test_manifest_is_public(tiny_release: Any) -> None:
    src = tiny_release.root / "manifest.json"
    assert src.stat().st_mode & 0o777 == 0o644
    text = src.read_text()
    assert '"sk"' not in text and '"t"' not in text


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'"manifest"', "expected a JSON object"),
        (b"{}", "field 'format'"),
    ],
)
def test_not_a_manifest(tmp_path: Path, content: bytes, match: str) -> None:
    from encryip_runtime.exceptions import FormatError

    p = tmp_path / "manifest.json"
    p.write_bytes(content)
    with pytest.raises(FormatError, match=match) as info:
        Manifest.load(p)
    assert str(p) in str(info.value)


def test_missing_manifest_file(tmp_path: Path) -> None:
    from encryip_runtime.exceptions import FormatError

    with pytest.raises(FormatError, match="file not found") as info:
        Manifest.load(tmp_path / "nope.json")
    assert "nope.json" in str(info.value)
