"""The Open Inference Protocol v2 in domain terms, shared by its gRPC and REST front ends.

What a v2 client sees of a model (its metadata, its outputs) is decided here once; the
gRPC servicer turns it into protobuf and the REST front end into JSON.

Outputs: ``ciphertext`` (BYTES ``[N]``, one wire ciphertext per row; its width comes from
the model's scheme) and, in the paper profile on request, ``onehot`` (FP32 ``[N, 3p]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from encryip_runtime import __version__
from encryip_runtime.exceptions import InputError
from encryip_runtime.server.model_store import LoadedModel
from encryip_runtime.server.tensors import kserve_datatype

__all__ = [
    "CIPHERTEXT_OUTPUT",
    "ONEHOT_OUTPUT",
    "PLATFORM",
    "SERVER_NAME",
    "check_outputs",
    "encryip_model_info",
    "model_metadata",
    "server_metadata",
]

CIPHERTEXT_OUTPUT = "ciphertext"
ONEHOT_OUTPUT = "onehot"
PLATFORM = "onnxruntime_onnx+encryip"
SERVER_NAME = "encryip"


def server_metadata(extensions: Sequence[str]) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(extensions)}


def model_metadata(loaded: LoadedModel, versions: Sequence[str]) -> dict[str, Any]:
    """``{name, versions, platform, inputs, outputs}`` as both protocols report it."""
    outputs: list[dict[str, Any]] = [
        {"name": CIPHERTEXT_OUTPUT, "datatype": "BYTES", "shape": [-1]}
    ]
    if loaded.onehot_size:
        outputs.append(
            {"name": ONEHOT_OUTPUT, "datatype": "FP32", "shape": [-1, loaded.onehot_size]}
        )
    return {
        "name": loaded.name,
        "versions": list(versions),
        "platform": PLATFORM,
        "inputs": [
            {
                "name": loaded.spec.name,
                "datatype": kserve_datatype(loaded.spec.np_dtype),
                "shape": [-1 if d is None else d for d in loaded.spec.batch_shape],
            }
        ],
        "outputs": outputs,
        # What a licensee's SDK checks its key against before it decrypts (public).
        "parameters": {
            "profile": loaded.profile,
            "num_classes": loaded.num_classes,
            "pk_fingerprint": loaded.model.manifest.pk_fingerprint,
            "manifest_digest": loaded.digest,
            "ciphertext_size": loaded.ciphertext_size,
        },
    }


def check_outputs(loaded: LoadedModel, names: Sequence[str]) -> list[str]:
    """The outputs to return (``ciphertext`` when none is named); ``InputError`` for others."""
    wanted = list(names) or [CIPHERTEXT_OUTPUT]
    for name in wanted:
        if name not in (CIPHERTEXT_OUTPUT, ONEHOT_OUTPUT) or (
            name == ONEHOT_OUTPUT and not loaded.onehot_size
        ):
            known = CIPHERTEXT_OUTPUT + (f", {ONEHOT_OUTPUT}" if loaded.onehot_size else "")
            raise InputError(f"unknown output {name[:64]!r}: model has {known}")
    if len(set(wanted)) != len(wanted):
        raise InputError(f"output requested twice: {wanted}")
    return wanted


def encryip_model_info(loaded: LoadedModel) -> dict[str, Any]:
    """What ``encryip.v1 GetModelInfo`` says, as JSON (the REST extension
    ``GET /v2/models/{m}/encryip``): the public key, profile and ciphertext width a v2
    client needs to check its key and decode the BYTES output. Same keys as the
    SDK's ``ModelInfo.to_json``."""
    g1, g2, h = loaded.pk
    return {
        "model_name": loaded.name,
        "model_version": loaded.version,
        "profile": loaded.profile,
        "group": loaded.group,
        "pk": {"g1": g1, "g2": g2, "h": h},
        "num_classes": loaded.num_classes,
        "class_names": list(loaded.class_names),
        "input": {
            "name": loaded.spec.name,
            "dtype": loaded.spec.dtype,
            "shape": list(loaded.spec.batch_shape),
        },
        "manifest_digest": loaded.digest,
        "ciphertext_size": loaded.ciphertext_size,
        "onehot_size": loaded.onehot_size,
        "runtime_version": __version__,
        "crypto_backend": loaded.crypto_backend,
    }
