"""Client SDK for licensees: call the runtime, decrypt the confused labels locally.

```python
from encryip_runtime.client import EncryIPClient, decrypt_batch

with EncryIPClient("host:8001", token="...") as client:
    key = client.load_key("keys/acme.key")        # checked against the server's pk
    pred = client.predict(images)                 # uint8 [N, C, H, W] -> N ciphertexts
    labels = decrypt_batch(pred, key)             # int64 [N]
    names = [client.info().class_names[y] for y in labels]
```

The URL picks the protocol: ``host:port``, ``grpc://`` and ``grpcs://`` speak gRPC
(``encryip.v1`` by default, ``protocol="v2"`` for the Open Inference Protocol's
``GRPCInferenceService``); ``http://`` and ``https://`` speak the Open Inference Protocol
over REST. :func:`v2_ciphertexts` turns any v2 BYTES output (tritonclient's numpy array,
REST JSON hex strings, raw length-prefixed bytes) into ciphertexts.

The secret key never leaves this process; the server only ever sees inputs.
"""

from __future__ import annotations

import hmac
import http.client
import json
import os
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import grpc
import numpy as np
import numpy.typing as npt

from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as v2_pb
from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from encryip_runtime.exceptions import EncodingError, EncryIPError, InputError, InvalidKeyError
from encryip_runtime.formats.keyfile import LicenseeKey

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "PROTOCOLS",
    "EncryIPClient",
    "Endpoint",
    "ModelInfo",
    "Prediction",
    "RemoteError",
    "decrypt",
    "decrypt_batch",
    "is_loopback",
    "load_key",
    "parse_endpoint",
    "v2_ciphertexts",
]

DEFAULT_TIMEOUT_S = 30.0
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# What the client speaks: our own service, or the Open Inference Protocol (gRPC or REST).
PROTOCOLS = ("encryip.v1", "v2")
_V2_HEADER = "Inference-Header-Content-Length"


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
    # What computes SampDist on the server ("native", "libsodium", "numpy"; "" if older).
    crypto_backend: str = ""

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
            crypto_backend=m.crypto_backend,
        )

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelInfo:
        """From ``to_json``'s form (and the REST ``/v2/models/{m}/encryip`` answer)."""
        try:
            pk, inp = d["pk"], d["input"]
            return cls(
                model_name=str(d["model_name"]),
                profile=str(d["profile"]),
                group=str(d["group"]),
                pk=(str(pk["g1"]), str(pk["g2"]), str(pk["h"])),
                num_classes=int(d["num_classes"]),
                class_names=tuple(str(c) for c in d["class_names"]),
                input_name=str(inp["name"]),
                input_dtype=str(inp["dtype"]),
                input_shape=tuple(-1 if v is None else int(v) for v in inp["shape"]),
                manifest_digest=str(d["manifest_digest"]),
                ciphertext_size=int(d["ciphertext_size"]),
                onehot_size=int(d["onehot_size"]),
                runtime_version=str(d.get("runtime_version", "")),
                crypto_backend=str(d.get("crypto_backend", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EncodingError(f"model info: missing or malformed field: {exc}") from None

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
            "crypto_backend": self.crypto_backend,
        }


@dataclass(frozen=True)
class Prediction(Sequence[bytes]):
    """Confused labels of one request: one wire ciphertext per input row."""

    ciphertexts: tuple[bytes, ...]
    model_name: str
    manifest_digest: str
    onehot: npt.NDArray[np.float32] | None = None
    model_version: str = ""

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
        if expected.ciphertext_size and expected.ciphertext_size != key.scheme.ciphertext_size:
            raise InvalidKeyError(
                f"{source}: key is for {key.scheme.ciphertext_size}-byte ciphertexts (format "
                f"v{key.format_version}) but the server's model answers "
                f"{expected.ciphertext_size}-byte ones: ask the model owner for this "
                "deployment's key"
            )
        want: tuple[str, ...] = expected.pk
    else:
        want = tuple(expected)
    g = key.scheme.group
    parts = key.pk.parts()
    # (g1, g2, h): format v2's further generators are bound through h and the key check
    have = tuple(str(g.to_json(part)[0]).lower() for part in (parts[0], parts[1], parts[-1]))
    if len(want) != 3 or not all(
        hmac.compare_digest(h.encode(), w.strip().lower().encode())
        for h, w in zip(have, want, strict=True)
    ):
        raise InvalidKeyError(
            f"{source}: this key (licensee {key.licensee!r}) does not belong to the server's "
            f"public key: it cannot decrypt these predictions. Ask the model owner for the key "
            f"of this deployment (key pk fingerprint {key.pk_fingerprint[:16]}…)"
        )


def v2_ciphertexts(output: Any, *, width: int | None = None) -> list[bytes]:
    """The ciphertexts in an Open Inference Protocol v2 BYTES output, whatever form it
    came in: tritonclient's ``as_numpy`` array (bytes objects), a REST JSON output
    (``{"datatype": "BYTES", "data": [hex, ...]}``) or its ``data`` list of hex strings,
    the raw tensor bytes (each element a 4-byte little-endian length, then its bytes),
    or a gRPC ``InferOutputTensor`` with ``bytes_contents``.

    ``width``: the expected ciphertext size (``ModelInfo.ciphertext_size`` or
    ``key.scheme.ciphertext_size``); ``EncodingError`` names the first element of
    another size. No size is assumed otherwise: it depends on the scheme."""
    from encryip_runtime.server.tensors import unpack_bytes_elements

    items: list[Any]
    if isinstance(output, dict):
        if output.get("datatype", "BYTES") != "BYTES":
            raise EncodingError(f"output {output.get('name')!r} is {output['datatype']}, not BYTES")
        items = list(np.asarray(output.get("data", []), dtype=object).reshape(-1))
    elif isinstance(output, (bytes, bytearray, memoryview)):
        try:
            items = list(unpack_bytes_elements(bytes(output)))
        except InputError as exc:
            raise EncodingError(f"raw BYTES tensor: {exc}") from None
    elif hasattr(output, "contents") and hasattr(output.contents, "bytes_contents"):
        items = list(output.contents.bytes_contents)
    else:
        items = list(np.asarray(output, dtype=object).reshape(-1))
    out: list[bytes] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            try:
                blob = bytes.fromhex(item)
            except ValueError:
                raise EncodingError(f"element {i}: not hex: {item[:40]!r}") from None
        elif isinstance(item, (bytes, bytearray, memoryview, np.bytes_)):
            blob = bytes(item)
        else:
            raise EncodingError(f"element {i}: {type(item).__name__} is not bytes or hex")
        if width is not None and len(blob) != width:
            raise EncodingError(f"element {i}: {len(blob)} bytes, a ciphertext has {width}")
        out.append(blob)
    return out


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


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: ``transport`` "grpc" or "rest", ``target`` HOST:PORT,
    ``tls`` True/False when the scheme says (grpcs/https, grpc/http), None when bare."""

    transport: str
    target: str
    tls: bool | None


_SCHEMES = {"grpc": ("grpc", False), "grpcs": ("grpc", True),
            "http": ("rest", False), "https": ("rest", True)}  # fmt: skip


def parse_endpoint(endpoint: str) -> Endpoint:
    """``grpc://h:p``, ``grpcs://h:p``, ``http://h:p``, ``https://h:p`` or bare ``h:p``
    (gRPC); ``dns:///h:p`` stays gRPC too."""
    text = endpoint.strip()
    transport, tls = "grpc", None
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() not in _SCHEMES:
            raise ValueError(
                f"endpoint scheme {scheme!r} unknown: use grpc://, grpcs://, http:// or "
                f"https:// (got {endpoint!r})"
            )
        transport, tls = _SCHEMES[scheme.lower()]
        text = rest.rstrip("/")
        if "/" in text:
            raise ValueError(
                f"endpoint must be SCHEME://HOST:PORT without a path, got {endpoint!r}"
            )
    elif text.startswith("dns:///"):
        text = text[len("dns:///") :]
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint must be HOST:PORT (or a URL of that), got {endpoint!r}")
    return Endpoint(transport, text, tls)


def _parse_endpoint(endpoint: str) -> str:
    return parse_endpoint(endpoint).target


# HTTP status -> the gRPC code name RemoteError reports (one vocabulary for both).
_HTTP_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
               404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED",
               499: "CANCELLED", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
               504: "DEADLINE_EXCEEDED"}  # fmt: skip


class _Rest:
    """A small blocking HTTP/1.1 client (one kept-alive connection, stdlib only)."""

    def __init__(
        self,
        target: str,
        *,
        tls: bool,
        root_certificates: bytes | None,
        client_cert: bytes | None,
        client_key: bytes | None,
        token: str | None,
    ) -> None:
        self.target = target
        host, _, port = target.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self._context: ssl.SSLContext | None = None
        if tls:
            ctx = ssl.create_default_context(
                cadata=root_certificates.decode() if root_certificates else None
            )
            if client_cert is not None and client_key is not None:
                _load_client_cert(ctx, client_cert, client_key)
            self._context = ctx
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float,
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and body; OSError when unreachable."""
        with self._lock:
            for attempt in (0, 1):  # a kept-alive connection the server closed: once more
                if self._conn is None:
                    if self._context is not None:
                        self._conn = http.client.HTTPSConnection(
                            self._host, self._port, timeout=timeout, context=self._context
                        )
                    else:
                        self._conn = http.client.HTTPConnection(
                            self._host, self._port, timeout=timeout
                        )
                conn = self._conn
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                try:
                    conn.request(method, path, body=body, headers={**self._headers, **headers})
                    resp = conn.getresponse()
                    data = resp.read()
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    conn.close()
                    self._conn = None
                    if attempt:
                        raise
                    continue
                except OSError:
                    conn.close()
                    self._conn = None
                    raise
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise AssertionError("unreachable")  # pragma: no cover


def _load_client_cert(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl loads a client certificate only from files: a private temporary directory,
    removed at once."""
    with tempfile.TemporaryDirectory(prefix="encryip-mtls-") as d:
        paths = []
        for name, data in (("cert.pem", cert), ("key.pem", key)):
            path = os.path.join(d, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            paths.append(path)
        ctx.load_cert_chain(paths[0], paths[1])


class EncryIPClient:
    """A connection to an EncryIP runtime; the URL picks the protocol (module docstring).

    ``protocol``: ``"encryip.v1"`` (gRPC default) or ``"v2"`` (the Open Inference
    Protocol; the only one over REST). ``model_name``: the model every call addresses
    unless it names another (empty: the server's only model)."""

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
        protocol: str | None = None,
        model_name: str = "",
    ) -> None:
        """TLS is on when the scheme says so (``grpcs://``, ``https://``), when ``tls`` is
        True or any certificate is given (``root_certificates`` None then means the
        system roots), and for a bare ``host:port`` off loopback. ``client_cert`` /
        ``client_key`` (PEM) for mTLS."""
        ep = parse_endpoint(endpoint)
        self.endpoint = ep.target
        self.transport = ep.transport
        self.timeout = timeout
        self.model_name = model_name
        if protocol is None:
            protocol = "encryip.v1" if ep.transport == "grpc" else "v2"
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if ep.transport == "rest" and protocol != "v2":
            raise ValueError(f"{endpoint!r} is REST: only protocol 'v2' is spoken there")
        self.protocol = protocol
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key go together (mTLS)")
        certs_given = root_certificates is not None or client_cert is not None
        if ep.tls is False and (certs_given or tls):
            raise ValueError(f"{endpoint!r} is plaintext: use grpcs:// or https:// for TLS")
        # Never plaintext by default off this machine: a non-loopback endpoint gets TLS
        # (system roots) unless the caller says tls=False (CLI: --plaintext).
        if ep.tls is not None:
            use_tls = ep.tls
        else:
            use_tls = tls if tls is not None else (certs_given or not is_loopback(self.endpoint))
        self.tls = use_tls
        self._info: dict[str, ModelInfo] = {}
        self._rest: _Rest | None = None
        self._channel: grpc.Channel | None = None
        if ep.transport == "rest":
            self._rest = _Rest(
                self.endpoint,
                tls=use_tls,
                root_certificates=root_certificates,
                client_cert=client_cert,
                client_key=client_key,
                token=token,
            )
            return
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
        self._v2 = v2_grpc.GRPCInferenceServiceStub(self._channel)

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
        if self._channel is not None:
            self._channel.close()
        if self._rest is not None:
            self._rest.close()

    # -- transports ------------------------------------------------------------------

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

    def _http(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._rest is not None
        try:
            status, hdrs, data = self._rest.request(
                method, path, body, headers or {}, self.timeout if timeout is None else timeout
            )
        except TimeoutError:
            raise RemoteError("DEADLINE_EXCEEDED", "no answer in time", self.endpoint) from None
        except ssl.SSLError as exc:
            hint = "TLS handshake failed: a plaintext server, or an untrusted certificate"
            raise RemoteError("UNAVAILABLE", str(exc), self.endpoint, hint=hint) from None
        except OSError as exc:
            hint = "" if self.tls else "a TLS-only server? use https://"
            raise RemoteError(
                "UNAVAILABLE", f"{type(exc).__name__}: {exc}", self.endpoint, hint=hint
            ) from None
        if status not in ok:
            try:
                details = str(json.loads(data)["error"])
            except (ValueError, KeyError, TypeError):
                details = data[:200].decode("utf-8", "replace") or f"HTTP {status}"
            code = _HTTP_CODES.get(status, "INTERNAL" if status >= 500 else "UNKNOWN")
            raise RemoteError(code, details, self.endpoint)
        return status, hdrs, data

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

    def _model_path(self, name: str) -> str:
        return "/v2/models/" + urllib.parse.quote(name, safe="")

    def _rest_model_name(self, timeout: float | None) -> str:
        """The one model a REST server serves (REST addresses models by name)."""
        _, _, data = self._http("POST", "/v2/repository/index", b'{"ready": true}', timeout=timeout)
        try:
            names = sorted({str(m["name"]) for m in json.loads(data)})
        except (ValueError, KeyError, TypeError):
            names = []
        if len(names) != 1:
            raise InputError(
                f"{self.endpoint} serves {len(names)} models ({', '.join(names)}): "
                "name one (model_name=...)"
            )
        return names[0]

    # -- API -------------------------------------------------------------------------

    def info(
        self, *, refresh: bool = False, timeout: float | None = None, model_name: str = ""
    ) -> ModelInfo:
        """The served model's public description (cached; ``refresh`` asks again).

        Over v2 gRPC it comes from ``encryip.v1`` on the same port (v2 metadata has no
        place for a public key); over REST from ``GET /v2/models/{m}/encryip``."""
        name = model_name or self.model_name
        if name not in self._info or refresh:
            if self._rest is not None:
                model = name or self._rest_model_name(timeout)
                _, _, data = self._http(
                    "GET", self._model_path(model) + "/encryip", timeout=timeout
                )
                try:
                    info = ModelInfo.from_json(json.loads(data))
                except ValueError as exc:
                    raise RemoteError("INTERNAL", f"bad model info: {exc}", self.endpoint) from None
            else:
                request = encryip_pb2.GetModelInfoRequest(model_name=name)
                info = ModelInfo.from_proto(self._call(self._stub.GetModelInfo, request, timeout))
            self._info[name] = info
        return self._info[name]

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
        name = model_name or self.model_name
        info = self._info.get(name)
        if info is not None and arr.ndim == len(info.input_shape) - 1:
            arr = arr[None]
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        if self.protocol == "v2":
            return self._predict_v2(arr, name, onehot, timeout)
        request = encryip_pb2.PredictRequest(
            model_name=name,
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

    def _predict_v2(
        self, arr: npt.NDArray[Any], name: str, onehot: bool, timeout: float | None
    ) -> Prediction:
        from encryip_runtime.server.tensors import kserve_datatype

        info = self.info(model_name=name, timeout=timeout)
        datatype = kserve_datatype(arr.dtype.newbyteorder("="))
        outputs = ["ciphertext", "onehot"] if onehot else ["ciphertext"]
        raw = arr.tobytes()
        results: dict[str, Any] = {}
        if self._rest is not None:
            head: dict[str, Any] = {
                "inputs": [{"name": info.input_name, "shape": list(arr.shape),
                            "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}],
                "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in outputs],
            }  # fmt: skip
            t = self.timeout if timeout is None else timeout
            head["parameters"] = {"timeout": int(t * 1e6)}
            header = json.dumps(head).encode()
            path = self._model_path(info.model_name) + "/infer"
            _, hdrs, data = self._http(
                "POST", path, header + raw, {_V2_HEADER: str(len(header))}, timeout
            )
            n = int(hdrs.get(_V2_HEADER.lower(), len(data)))
            resp = json.loads(data[:n])
            offset, version = n, str(resp.get("model_version", ""))
            for out in resp.get("outputs", []):
                size = (out.get("parameters") or {}).get("binary_data_size")
                if size is not None:
                    results[out["name"]] = (out, data[offset : offset + size])
                    offset += size
                else:
                    results[out["name"]] = (out, None)
            cts = v2_ciphertexts(
                results["ciphertext"][1] if results["ciphertext"][1] is not None
                else results["ciphertext"][0], width=info.ciphertext_size,
            )  # fmt: skip
        else:
            request = v2_pb.ModelInferRequest(
                model_name=info.model_name,
                inputs=[v2_pb.ModelInferRequest.InferInputTensor(
                    name=info.input_name, datatype=datatype, shape=list(arr.shape))],
                outputs=[v2_pb.ModelInferRequest.InferRequestedOutputTensor(name=o)
                         for o in outputs],
                raw_input_contents=[raw],
            )  # fmt: skip
            resp_pb = self._call(self._v2.ModelInfer, request, timeout)
            version = resp_pb.model_version
            for i, out in enumerate(resp_pb.outputs):
                blob = resp_pb.raw_output_contents[i] if resp_pb.raw_output_contents else None
                results[out.name] = (out, blob)
            out_pb, blob = results["ciphertext"]
            cts = v2_ciphertexts(blob if blob is not None else out_pb, width=info.ciphertext_size)
        one = None
        if onehot:
            out, blob = results["onehot"]
            shape = tuple(int(d) for d in (out["shape"] if isinstance(out, dict) else out.shape))
            if blob is not None:
                one = np.frombuffer(blob, dtype="<f4").reshape(shape)
            elif isinstance(out, dict):
                one = np.asarray(out["data"], dtype=np.float32).reshape(shape)
            else:
                one = np.asarray(out.contents.fp32_contents, dtype=np.float32).reshape(shape)
        return Prediction(tuple(cts), info.model_name, info.manifest_digest, one, version)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status of ``service`` ("" = the whole server): ``"SERVING"``,
        ``"NOT_SERVING"`` (e.g. draining), ...; RemoteError when it does not answer.
        Over REST: ``/v2/health/ready`` (200 SERVING, 4xx NOT_SERVING)."""
        if self._rest is not None:
            status, _, _ = self._http(
                "GET", "/v2/health/ready", timeout=timeout, ok=tuple(range(200, 500))
            )
            return "SERVING" if status == 200 else "NOT_SERVING"
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        resp = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    def load_key(self, path: str | Path) -> LicenseeKey:
        """Load a key file and check it belongs to this server's public key."""
        return load_key(path, expected_pk=self.info())
