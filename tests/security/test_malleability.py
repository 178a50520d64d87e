"""Ciphertexts are malleable: integrity of a response rests on TLS, not on the scheme.

Anyone on the path, holding only public data (the manifest's pk and codebook), can
replace a served confused label with a fresh re-randomisation of another codebook entry,
or shift its u3; the licensee's key decrypts another label and nothing in the
ciphertext tells it apart from a genuine answer (docs/security.md)."""

from __future__ import annotations

from typing import Any

import numpy as np
from server.conftest import running_server, sample_inputs

from encryip_runtime.client import EncryIPClient, decrypt_batch
from encryip_runtime.formats.manifest import Manifest


def test_a_response_is_swapped_with_public_data_only(secure_release: Any) -> None:
    d = secure_release.licensee_dir("acme")
    with running_server(d) as server, EncryIPClient(f"127.0.0.1:{server.port}") as client:
        key = client.load_key(secure_release.key("acme"))
        genuine = client.predict(sample_inputs(1, seed=11))
    truth = int(decrypt_batch(genuine, key)[0])

    # The attacker's view: manifest.json (public), no key, no vault.
    manifest = Manifest.load(d / "manifest.json")
    scheme, pk = manifest.scheme, manifest.pk
    assert manifest.codebook is not None
    forged = scheme.to_wire(scheme.sampdist(pk, manifest.codebook))  # one per codebook entry
    labels = decrypt_batch([bytes(row) for row in forged], key)
    others = [i for i, y in enumerate(labels) if int(y) != truth]
    assert others, "some codebook entry decrypts to another label"
    swapped = bytes(forged[others[0]])
    # Indistinguishable in form: same size, valid encodings, fresh bytes every time.
    assert len(swapped) == len(genuine[0])
    scheme.from_wire([swapped])
    assert swapped not in {bytes(r) for r in scheme.to_wire(manifest.codebook)}
    assert int(decrypt_batch([swapped], key)[0]) != truth

    # Altering u3 alone (times g1) also changes what the key decrypts.
    g = scheme.group
    cts = scheme.from_wire([genuine[0]])
    shifted = cts.copy()
    shifted[:, 2] = g.mul(cts[:, 2], g.generator())
    assert not np.array_equal(scheme.dec(key.sk, shifted), scheme.dec(key.sk, cts))
