"""``manifest.json``: everything public the runtime needs.

``encryip-manifest/1`` (paper profile, secure format v1) and ``encryip-manifest/2``
(secure format v2: ``scheme`` object, ``pk.g`` list, wider codebook rows) are both read;
each manifest is written in the format of its scheme.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encryip_runtime import __version__
from encryip_runtime.crypto.profiles import AnyScheme, profile_of
from encryip_runtime.crypto.scheme import Ciphertexts
from encryip_runtime.crypto.scheme_v2 import CSLiteV2
from encryip_runtime.formats.common import (
    AnyPublicKey,
    SchemeBound,
    ciphertexts_from_json,
    ciphertexts_to_json,
    pk_fingerprint,
    pk_from_fields,
    pk_to_json,
    scheme_from_fields,
    scheme_v2_from_fields,
    scheme_v2_to_json,
)
from encryip_runtime.formats.jsonio import Fields, canonical_json, read_json_document, write_json
from encryip_runtime.transfer import DECODERS, Transfer

__all__ = ["MANIFEST_FORMAT", "MANIFEST_FORMATS", "MANIFEST_FORMAT_V2", "InputSpec", "Manifest"]

MANIFEST_FORMAT = "encryip-manifest/1"
MANIFEST_FORMAT_V2 = "encryip-manifest/2"
MANIFEST_FORMATS = (MANIFEST_FORMAT, MANIFEST_FORMAT_V2)
_DTYPES = ("uint8", "float32")


@dataclass(frozen=True)
class InputSpec:
    """The ONNX input: raw pixels ``[batch, C, H, W]`` (normalisation is in the graph).

    ``mean``/``std`` (torchvision's [0, 1] scale, one per channel the network takes) and
    ``channel_repeat`` (3: the grey channel is repeated for an RGB network) describe what
    the graph does to the pixels: ``(repeat(x) / 255 - mean) / std``. Informational
    (clients send raw pixels); manifests written before they existed leave them out.
    """

    name: str = "pixels"
    dtype: str = "uint8"
    shape: tuple[int, int, int] = (1, 28, 28)  # C, H, W; the batch axis is dynamic
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_repeat: int = 1

    @property
    def np_dtype(self) -> np.dtype[Any]:
        """The tensor dtype the model takes (little-endian, as on the wire)."""
        return np.dtype(self.dtype).newbyteorder("<")

    @property
    def batch_shape(self) -> tuple[int | None, ...]:
        """``(None, C, H, W)``: the batch axis is dynamic."""
        return (None, *self.shape)

    def describe(self) -> str:
        """``uint8[N, 1, 28, 28]``, as errors show it."""
        return f"{self.dtype}[N, {', '.join(str(d) for d in self.shape)}]"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype,
            "shape": [None, *self.shape],
        }
        if self.mean is not None and self.std is not None:
            c, h, w = self.shape
            doc.update(channels=c, size=[h, w], mean=list(self.mean), std=list(self.std))
            doc["normalization"] = "(pixels / 255 - mean) / std, inside the graph"
        if self.channel_repeat != 1:
            doc["channel_repeat"] = self.channel_repeat
        return doc

    @classmethod
    def from_fields(cls, inp: Fields) -> InputSpec:
        shape = inp.list("shape", length=4)
        if shape[0] is not None and shape[0] != -1:
            raise inp.error("shape", "the batch axis (first) must be null (dynamic)")
        for i, d in enumerate(shape[1:], start=1):
            if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 1 << 16:
                raise inp.error(f"shape[{i}]", f"expected a positive integer, got {d!r}")
        dtype = inp.str("dtype")
        if dtype not in _DTYPES:
            raise inp.error("dtype", f"unsupported dtype {dtype!r} (expected one of {_DTYPES})")
        repeat = inp.int("channel_repeat", lo=1) if inp.has("channel_repeat") else 1
        stats: list[tuple[float, ...] | None] = [None, None]
        for j, key in enumerate(("mean", "std")):
            if not inp.has(key):
                continue
            values = inp.list(key, length=shape[1] * repeat)
            if not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in values
            ) or (key == "std" and any(v <= 0 for v in values)):
                raise inp.error(key, f"expected {shape[1] * repeat} finite numbers, got {values!r}")
            stats[j] = tuple(float(v) for v in values)
        return cls(
            inp.str("name"),
            dtype,
            (shape[1], shape[2], shape[3]),
            mean=stats[0],
            std=stats[1],
            channel_repeat=repeat,
        )


@dataclass(frozen=True)
class Manifest(SchemeBound):
    scheme: AnyScheme
    pk: AnyPublicKey
    class_names: tuple[str, ...]
    input: InputSpec
    output_name: str
    output_size: int
    model_file: str
    model_sha256: str
    model_name: str = "encryip"
    codebook: Ciphertexts | None = None  # secure profile
    output_order: tuple[int, ...] | None = None  # paper profile, licensee variants
    # paper profile: the Φ⁻¹ rule and, for "joint", the K + T ciphertexts it chooses
    # among (base order: element values, not output positions). None = "argmax", what
    # every manifest written before the joint decoder means.
    decoder: str | None = None
    codewords: Ciphertexts | None = None
    licensee: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pk_fingerprint(self) -> str:
        return pk_fingerprint(self.scheme, self.pk)

    def transfer(self) -> Transfer:
        return profile_of(self.scheme).transfer(
            self.scheme,
            codebook=self.codebook,
            output_order=self.output_order,
            codewords=self.codewords if self.decoder == "joint" else None,
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": MANIFEST_FORMAT_V2 if self.format_version == 2 else MANIFEST_FORMAT,
            "encryip_version": __version__,
            "profile": self.profile,
            "group": self.scheme.group.name,
            "model_name": self.model_name,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
        }
        if isinstance(self.scheme, CSLiteV2):
            doc["scheme"] = scheme_v2_to_json(self.scheme)
        doc |= {
            "pk": pk_to_json(self.scheme, self.pk),
            "pk_fingerprint": self.pk_fingerprint,
            "input": self.input.to_json(),
            "output": {"name": self.output_name, "size": self.output_size},
            "model": {"file": self.model_file, "sha256": self.model_sha256},
        }
        if self.licensee is not None:
            doc["licensee"] = self.licensee
        if self.codebook is not None:
            doc["codebook"] = ciphertexts_to_json(self.scheme, self.codebook)
        if self.output_order is not None:
            doc["output_order"] = list(self.output_order)
        if self.decoder is not None:
            doc["decoder"] = self.decoder
        if self.codewords is not None:
            doc["codewords"] = ciphertexts_to_json(self.scheme, self.codewords)
        doc.update(self.extra)
        return doc

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON form: what key files and the vault refer to."""
        import hashlib

        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> Manifest:
        f = read_json_document(Path(path), MANIFEST_FORMATS)
        return cls.from_fields(f)

    @classmethod
    def from_fields(cls, f: Fields) -> Manifest:
        v2 = f.has("format") and f.str("format") == MANIFEST_FORMAT_V2
        scheme: AnyScheme = scheme_v2_from_fields(f) if v2 else scheme_from_fields(f)
        k = scheme.num_classes
        if f.has("encryip_version"):
            f.str("encryip_version")
        names: tuple[str, ...] = tuple(f.str_list("class_names", length=k))
        pk = pk_from_fields(scheme, f)
        if f.has("pk_fingerprint") and f.str("pk_fingerprint") != pk_fingerprint(scheme, pk):
            raise f.error("pk_fingerprint", "does not match pk")
        spec = InputSpec.from_fields(f.obj_("input"))
        out = f.obj_("output")
        size = out.int("size", lo=1)
        model = f.obj_("model")
        model_file = model.str("file")
        if "/" in model_file or "\\" in model_file or model_file.startswith("."):
            raise model.error("file", "must be a plain file name inside the release directory")
        sha = model.str("sha256")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise model.error("sha256", "expected 64 lowercase hex digits")
        codebook = None
        order: tuple[int, ...] | None = None
        decoder: str | None = None
        codewords: Ciphertexts | None = None
        prof = profile_of(scheme)
        if prof.uses_codebook:
            codebook = ciphertexts_from_json(scheme, f, "codebook")
            if len(codebook) != size:
                raise f.error(
                    "codebook", f"{len(codebook)} entries but the model has {size} outputs"
                )
            if size < k:
                raise f.error("codebook", f"fewer slots ({size}) than classes ({k})")
        else:
            want = prof.output_size(scheme)
            if size != want:
                p = prof.block_width(want)
                raise out.error(
                    "size", f"{prof.name} profile with p={p} needs 3p = {want} outputs, got {size}"
                )
            if f.has("output_order"):
                order = tuple(f.permutation("output_order", size))
            if f.has("decoder"):
                decoder = f.str("decoder")
                if decoder not in DECODERS:
                    raise f.error(
                        "decoder", f"unknown decoder {decoder!r} (expected one of {DECODERS})"
                    )
            if f.has("codewords"):
                codewords = ciphertexts_from_json(scheme, f, "codewords")
                if len(codewords) < k:
                    raise f.error(
                        "codewords", f"{len(codewords)} entries: expected at least K = {k}"
                    )
            if decoder == "joint" and codewords is None:
                raise f.error("codewords", "the joint decoder needs the release's codewords")
        model_name = f.str("model_name") if f.has("model_name") else "encryip"
        if not model_name or len(model_name) > 128:
            raise f.error("model_name", "must be 1-128 characters")
        return cls(
            scheme=scheme,
            pk=pk,
            class_names=names,
            input=spec,
            output_name=out.str("name"),
            output_size=size,
            model_file=model_file,
            model_sha256=sha,
            model_name=model_name,
            codebook=codebook,
            output_order=order,
            decoder=decoder,
            codewords=codewords,
            licensee=f.str("licensee") if f.has("licensee") else None,
        )

    def with_changes(self, **changes: Any) -> Manifest:
        from dataclasses import replace

        return replace(self, **changes)
