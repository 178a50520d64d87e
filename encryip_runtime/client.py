"""Client SDK for licensees: call the runtime, decrypt the confused labels locally.

```python
from encryip_runtime.client import EncryIPClient, decrypt_batch

with EncryIPClient("host:8001", token="...") as client:
    key = client.load_key("keys/acme.key")        # checked against the server's pk
    pred = client.predict(images)                 # uint8 [N, C, H, W] -> N ciphertexts
    labels = decrypt_batch(pred, key)             # int64 [N]
    names = [client.info().class_names[y] for y in labels]
```

The secret key never leaves this process; the server only ever sees inputs.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import grpc
import numpy as np
import numpy.typing as npt

from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
from encryip_runtime.exceptions import EncryIPError, InputError, InvalidKeyError
from encryip_runtime.formats.keyfile import LicenseeKey

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "EncryIPClient",
    "ModelInfo",
    "Prediction",
    "RemoteError",
    "decrypt",
    "decrypt_batch",
    "is_loopback",
    "load_key",
]

DEFAULT_TIMEOUT_S = 30.0
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class RemoteError(EncryIPError):
    """The server answered with an error status: ``status_code`` is the
    ``grpc.StatusCode``, ``code`` its name (``"UNAVAILABLE"``)."""

    def __init__(
        self,
        code: str,
        details: str,
        endpoint: str,
        status_code: grpc.StatusCode | None = None,
        hint: str = "",
    ) -> None:
        self.code = code
        self.status_code = (
            status_code if status_code is not None else getattr(grpc.StatusCode, code, None)
        )
        self.details = details
        self.endpoint = endpoint
        self.hint = hint
        super().__init__(f"{endpoint}: {code}: {details}" + (f" ({hint})" if hint else ""))


_LOOPBACK_HOSTS = ("localhost", "::1", "[::1]", "ip6-localhost")


def is_loopback(target: str) -> bool:
    """True for ``localhost``/``127.x.y.z``/``[::1]`` targets (and unix sockets)."""
    if target.startswith("unix:"):
        return True
    host = target.rpartition(":")[0] if not target.startswith("unix") else target
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class ModelInfo:
    """What the server says about its model (all public)."""

    model_name: str
    profile: str
    group: str
    pk: tuple[str, str, str]
    num_classes: int
    class_names: tuple[str, ...]
    input_name: str
    input_dtype: str
    input_shape: tuple[int, ...]  # -1 for the batch dimension
    manifest_digest: str
    ciphertext_size: int
    onehot_size: int
    runtime_version: str

    @classmethod
    def from_proto(cls, m: encryip_pb2.ModelInfo) -> ModelInfo:
        return cls(
            model_name=m.model_name,
            profile=m.profile,
            group=m.group,
            pk=(m.pk.g1, m.pk.g2, m.pk.h),
            num_classes=m.num_classes,
            class_names=tuple(m.class_names),
            input_name=m.input.name,
            input_dtype=m.input.dtype,
            input_shape=tuple(m.input.shape),
            manifest_digest=m.manifest_digest,
            ciphertext_size=m.ciphertext_size,
            onehot_size=m.onehot_size,
            runtime_version=m.runtime_version,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "profile": self.profile,
            "group": self.group,
            "pk": {"g1": self.pk[0], "g2": self.pk[1], "h": self.pk[2]},
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input": {
                "name": self.input_name,
                "dtype": self.input_dtype,
                "shape": [None if d < 0 else d for d in self.input_shape],
            },
            "manifest_digest": self.manifest_digest,
            "ciphertext_size": self.ciphertext_size,
            "onehot_size": self.onehot_size,
            "runtime_version": self.runtime_version,
        }


@dataclass(frozen=True)
class Prediction(Sequence[bytes]):
    """Confused labels of one request: one wire ciphertext per input row."""

    ciphertexts: tuple[bytes, ...]
    model_name: str
    manifest_digest: str
    onehot: npt.NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return len(self.ciphertexts)

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        return self.ciphertexts[i]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.ciphertexts)


def load_key(
    path: str | Path, *, expected_pk: ModelInfo | Sequence[str] | None = None
) -> LicenseeKey:
    """Load a licensee key file (its ``sk`` is checked against its ``pk``), and, when
    ``expected_pk`` is given (the server's ``ModelInfo`` or ``(g1, g2, h)``), check
    that the key belongs to that public key. Raises ``InvalidKeyError`` on a mismatch."""
    key = LicenseeKey.load(Path(path))
    if expected_pk is not None:
        check_key_matches(key, expected_pk, source=str(path))
    return key


def check_key_matches(
    key: LicenseeKey, expected: ModelInfo | Sequence[str], *, source: str = "key"
) -> None:
    if isinstance(expected, ModelInfo):
        if expected.profile != key.profile:
            raise InvalidKeyError(
                f"{source}: key is for profile {key.profile!r} but the server's model uses "
                f"{expected.profile!r}"
            )
        if expected.num_classes != key.num_classes:
            raise InvalidKeyError(
                f"{source}: key is for {key.num_classes} classes but the server's model has "
                f"{expected.num_classes}"
            )
        want: tuple[str, ...] = expected.pk
    else:
        want = tuple(expected)
    g = key.scheme.group
    have = tuple(str(g.to_json(part)[0]).lower() for part in key.pk.parts())
    if len(want) != 3 or not all(
        hmac.compare_digest(h.encode(), w.strip().lower().encode())
        for h, w in zip(have, want, strict=True)
    ):
        raise InvalidKeyError(
            f"{source}: this key (licensee {key.licensee!r}) does not belong to the server's "
            f"public key: it cannot decrypt these predictions. Ask the model owner for the key "
            f"of this deployment (key pk fingerprint {key.pk_fingerprint[:16]}…)"
        )


def decrypt(pred: bytes, key: LicenseeKey) -> int:
    """The class index of one confused label."""
    return int(decrypt_batch([pred], key)[0])


def decrypt_batch(preds: Prediction | Sequence[bytes], key: LicenseeKey) -> npt.NDArray[np.int64]:
    """Class indices of many confused labels (``EncodingError`` names a malformed one)."""
    items = list(preds.ciphertexts if isinstance(preds, Prediction) else preds)
    if not items:
        return np.zeros(0, dtype=np.int64)
    cts = key.scheme.from_wire([bytes(b) for b in items])
    return key.scheme.decrypt_labels(key.sk, cts)


def _parse_endpoint(endpoint: str) -> str:
    target = endpoint.strip()
    for prefix in ("grpc://", "grpcs://", "dns:///"):
        if target.startswith(prefix):
            target = target[len(prefix) :]
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint must be HOST:PORT, got {endpoint!r}")
    return target


class EncryIPClient:
    """A connection to an EncryIP runtime (``encryip.v1``)."""

    def __init__(
        self,
        endpoint: str,
        *,
        root_certificates: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls: bool | None = None,
        max_message_bytes: int = _MAX_MESSAGE_BYTES,
    ) -> None:
        """TLS is on when ``tls`` is True or any certificate is given (``root_certificates``
        None then means the system roots). ``client_cert``/``client_key`` (PEM) for mTLS."""
        self.endpoint = _parse_endpoint(endpoint)
        self.timeout = timeout
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key go together (mTLS)")
        certs_given = root_certificates is not None or client_cert is not None
        # Never plaintext by default off this machine: a non-loopback endpoint gets TLS
        # (system roots) unless the caller says tls=False (CLI: --plaintext).
        use_tls = tls if tls is not None else (certs_given or not is_loopback(self.endpoint))
        self.tls = use_tls
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if use_tls:
            creds = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
            self._channel = grpc.secure_channel(self.endpoint, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(self.endpoint, options=options)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._stub = encryip_pb2_grpc.EncryIPStub(self._channel)
        self._info: ModelInfo | None = None

    def __enter__(self) -> EncryIPClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            name = code.name if code is not None else "UNKNOWN"
            raise RemoteError(
                name, details or "", self.endpoint, code, self._hint(code, details or "")
            ) from None

    def _hint(self, code: grpc.StatusCode | None, details: str) -> str:
        """A likely cause for the bare transport errors gRPC gives."""
        if code != grpc.StatusCode.UNAVAILABLE:
            return ""
        low = details.lower()
        if not self.tls and ("socket closed" in low or "connection reset" in low):
            return "the server may expect TLS: add --tls or --ca-cert FILE"
        if self.tls and ("ssl" in low or "handshake" in low or "wrong version" in low):
            return (
                "TLS handshake failed: a plaintext server, or a certificate this client "
                "does not trust (--ca-cert)"
            )
        return ""

    def info(self, *, refresh: bool = False, timeout: float | None = None) -> ModelInfo:
        """The served model's public description (cached; ``refresh`` asks again)."""
        if self._info is None or refresh:
            msg = self._call(self._stub.GetModelInfo, encryip_pb2.GetModelInfoRequest(), timeout)
            self._info = ModelInfo.from_proto(msg)
        return self._info

    def predict(
        self,
        x: npt.ArrayLike,
        *,
        onehot: bool = False,
        timeout: float | None = None,
        model_name: str = "",
    ) -> Prediction:
        """Confused labels for a batch (``[N, C, H, W]``; one image ``[C, H, W]`` also works)."""
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"input must be numeric, got dtype {arr.dtype}")
        info = self._info
        if info is not None and arr.ndim == len(info.input_shape) - 1:
            arr = arr[None]
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        request = encryip_pb2.PredictRequest(
            model_name=model_name,
            input=encryip_pb2.Tensor(
                dtype=arr.dtype.name, shape=list(arr.shape), data=arr.tobytes()
            ),
            return_onehot=onehot,
        )
        resp = self._call(self._stub.Predict, request, timeout)
        one = None
        if resp.HasField("onehot") and resp.onehot.data:
            one = np.frombuffer(resp.onehot.data, dtype="<f4").reshape(tuple(resp.onehot.shape))
        return Prediction(tuple(resp.ciphertexts), resp.model_name, resp.manifest_digest, one)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status of ``service`` ("" = the whole server): ``"SERVING"``,
        ``"NOT_SERVING"`` (e.g. draining), ...; RemoteError when it does not answer."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        resp = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    def load_key(self, path: str | Path) -> LicenseeKey:
        """Load a key file and check it belongs to this server's public key."""
        return load_key(path, expected_pk=self.info())
