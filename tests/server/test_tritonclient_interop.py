"""tritonclient.grpc (in its own venv and process) calls ModelInfer; the licensee decrypts.

tritonclient ships its own copy of the ``inference`` protos, which clash with ours in one
process (duplicate symbols) and pins protobuf 6, so it runs in a subprocess from a venv
created once and cached under pytest's cache dir (``triton_python`` in conftest.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from encryip_runtime.client import decrypt_batch
from encryip_runtime.formats.keyfile import LicenseeKey

from .conftest import run_tritonclient, running_server, sample_inputs
from .test_encryip_service import plain_labels

TRITON_SCRIPT = r"""
meta = client.get_model_metadata("encryip", as_json=True)
inp = tc.InferInput("pixels", list(x.shape), "UINT8")
inp.set_data_from_numpy(x)
out = tc.InferRequestedOutput("ciphertext")
result = client.infer("encryip", [inp], outputs=[out])
cts = result.as_numpy("ciphertext")
print(json.dumps({"meta": meta, "cts": [bytes(c).hex() for c in cts.reshape(-1)]}))
"""


def test_tritonclient_infer_and_decrypt(
    tiny_release: Any, triton_python: Path, tmp_path: Path
) -> None:
    x = sample_inputs(5, seed=7)
    with running_server(tiny_release.licensee_dir("acme")) as server:
        url = f"127.0.0.1:{server.port}"
        out = run_tritonclient(triton_python, "grpc", TRITON_SCRIPT, url, x, tmp_path)
    assert out["meta"]["name"] == "encryip"
    assert out["meta"]["outputs"][0]["datatype"] == "BYTES"
    key = LicenseeKey.load(tiny_release.key("acme"))
    labels = decrypt_batch([bytes.fromhex(h) for h in out["cts"]], key)
    np.testing.assert_array_equal(labels, plain_labels(tiny_release, "acme", x))
    assert sys.executable != str(triton_python)
