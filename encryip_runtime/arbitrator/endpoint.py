"""Talking to a suspect service: Open Inference Protocol v2 (gRPC, REST) and encryip.v1.

The arbitrator cannot assume the suspect runs our server: a leaked ONNX is as likely
behind KServe, Triton or a hand-written API. Each transport sends one uint8 image per
request and returns what came back, undecoded beyond the wire format: a list of
:class:`Output` (name, datatype, shape, values). :mod:`verify_endpoint` decides what the
values mean. Every failure is an :class:`EndpointError` that names the URL and the step.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import numpy.typing as npt

from encryip_runtime.exceptions import EncryIPError

__all__ = [
    "PROTOCOLS",
    "EndpointError",
    "Output",
    "TlsOptions",
    "Transport",
    "open_transport",
    "parse_url",
]

log = logging.getLogger(__name__)

ENCRYIP_SERVICE = "encryip.v1.EncryIP"
V2_SERVICE = "inference.GRPCInferenceService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# v2 datatype -> numpy dtype (BYTES handled apart)
_V2_DTYPES: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}  # fmt: skip


class EndpointError(EncryIPError):
    """The endpoint could not be reached, refused, timed out, or answered nonsense."""


@dataclass(frozen=True)
class Output:
    """One output tensor of one answer, as the server sent it."""

    name: str
    datatype: str  # v2 datatype ("FP32", "BYTES", ...); encryip.v1 answers "BYTES"
    shape: tuple[int, ...]
    values: list[Any]  # flat: numbers, or bytes for BYTES (JSON strings as UTF-8 bytes)
    json_strings: bool = False  # BYTES came as JSON strings (REST): hex may stand for bytes

    def to_json(self) -> dict[str, Any]:
        vals = [_jsonable(v) for v in self.values]
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape),
                "data": vals}  # fmt: skip


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        try:
            text = v.decode("utf-8")
            if text.isprintable():
                return text
        except UnicodeDecodeError:
            pass
        return {"b64": base64.b64encode(v).decode("ascii")}
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)
    return v


@dataclass(frozen=True)
class TlsOptions:
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    token: str | None = None


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str  # grpc | grpcs | http | https
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme in ("grpcs", "https")

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}"


def parse_url(url: str) -> ParsedUrl:
    """``grpc(s)://host:port``, ``http(s)://host:port``, or bare ``host:port`` (gRPC)."""
    text = url.strip()
    if "://" not in text:
        text = "grpc://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("grpc", "grpcs", "http", "https"):
        raise EndpointError(
            f"{url!r}: unknown scheme {parts.scheme!r} (use grpc://, grpcs://, http:// or https://)"
        )
    try:
        port = parts.port
    except ValueError:
        raise EndpointError(f"{url!r}: the port is not a number in 0..65535") from None
    if not parts.hostname:
        raise EndpointError(f"{url!r}: no host")
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
        if port is None:
            raise EndpointError(f"{url!r}: no port (grpc URLs need host:port)")
    if parts.path not in ("", "/"):
        raise EndpointError(
            f"{url!r}: give only scheme://host:port (no path); --model names the model"
        )
    return ParsedUrl(scheme, parts.hostname, port)


# ----------------------------------------------------------------------------- transports


@dataclass
class Transport:
    """One suspect endpoint. ``protocol``: "encryip.v1" | "v2-grpc" | "v2-rest"."""

    url: ParsedUrl
    protocol: str
    model: str
    timeout_s: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def infer(self, x: npt.NDArray[np.uint8], request_id: str) -> list[Output]:
        raise NotImplementedError

    def close(self) -> None:
        pass


PROTOCOLS = ("auto", "encryip.v1", "v2")


def open_transport(
    url: str, model: str | None, tls: TlsOptions, timeout_s: float, protocol: str = "auto"
) -> Transport:
    """Connect, detect the protocol from what the server offers (or use ``protocol`` on a
    gRPC URL: ``encryip.v1`` or ``v2``), read its metadata."""
    if protocol not in PROTOCOLS:
        raise EndpointError(f"unknown protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
    parsed = parse_url(url)
    if parsed.scheme in ("http", "https"):
        if protocol == "encryip.v1":
            raise EndpointError(f"{url}: encryip.v1 is gRPC only; use grpc:// or grpcs://")
        rest = _RestTransport(parsed, "v2-rest", model or "", timeout_s, tls=tls)
        rest.connect()
        return rest
    grpc_t = _GrpcTransport(parsed, "", model or "", timeout_s, tls=tls)
    try:
        grpc_t.connect(protocol)
    except BaseException:
        grpc_t.close()
        raise
    return grpc_t


class _GrpcTransport(Transport):
    def __init__(
        self, url: ParsedUrl, protocol: str, model: str, timeout_s: float, *, tls: TlsOptions
    ) -> None:
        super().__init__(url, protocol, model, timeout_s)
        import grpc

        self._grpc = grpc
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if url.tls:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(tls.ca_cert),
                private_key=_read(tls.client_key),
                certificate_chain=_read(tls.client_cert),
            )
            self._channel = grpc.secure_channel(url.authority, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(url.authority, options=options)
        self._md = (("authorization", f"Bearer {tls.token}"),) if tls.token else ()

    def close(self) -> None:
        self._channel.close()

    def _call(self, step: str, method: Any, request: Any) -> Any:
        grpc = self._grpc
        try:
            return method(request, timeout=self.timeout_s, metadata=self._md)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            name = code.name if code is not None else "ERROR"
            raise EndpointError(f"{self.url}: {step} failed: {name}: {details}") from None

    def _services(self) -> set[str] | None:
        """Services listed by server reflection (v1, then v1alpha), or None without it."""
        grpc = self._grpc
        from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
        from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc

        from encryip_runtime._generated.grpc.reflection.v1 import reflection_pb2 as v1_pb2
        from encryip_runtime._generated.grpc.reflection.v1 import reflection_pb2_grpc as v1_grpc

        for pb, stubs in ((v1_pb2, v1_grpc), (v1alpha_pb2, v1alpha_grpc)):
            stub = stubs.ServerReflectionStub(self._channel)
            try:
                answers = stub.ServerReflectionInfo(
                    iter([pb.ServerReflectionRequest(list_services="")]),
                    timeout=self.timeout_s,
                    metadata=self._md,
                )
                for resp in answers:
                    return {s.name for s in resp.list_services_response.service}
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise EndpointError(
                        f"{self.url}: cannot reach the server: {code.name}: {exc.details()}"
                    ) from None
                if code is grpc.StatusCode.UNAUTHENTICATED:
                    raise EndpointError(
                        f"{self.url}: UNAUTHENTICATED: {exc.details()} (pass --token-file)"
                    ) from None
        return None

    def connect(self, protocol: str = "auto") -> None:
        services = self._services()
        self.metadata["reflection_services"] = sorted(services) if services is not None else None
        if protocol == "encryip.v1":
            self._try_encryip(required=True)
            return
        if protocol == "v2":
            self._connect_v2()
            return
        offers_encryip = services is None or ENCRYIP_SERVICE in services
        if offers_encryip and self._try_encryip(required=services is not None):
            return
        if services is not None and V2_SERVICE not in services:
            raise EndpointError(
                f"{self.url}: the server offers neither {ENCRYIP_SERVICE} nor {V2_SERVICE} "
                f"(reflection lists {', '.join(sorted(services)) or 'nothing'})"
            )
        self._connect_v2()

    def _try_encryip(self, required: bool) -> bool:
        from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc

        grpc = self._grpc
        stub = encryip_pb2_grpc.EncryIPStub(self._channel)
        try:
            info = stub.GetModelInfo(
                encryip_pb2.GetModelInfoRequest(model_name=self.model),
                timeout=self.timeout_s,
                metadata=self._md,
            )
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED and not required:
                return False
            raise EndpointError(
                f"{self.url}: encryip.v1 GetModelInfo failed: {exc.code().name}: {exc.details()}"
            ) from None
        self.protocol = "encryip.v1"
        self.model = info.model_name
        self._encryip = (encryip_pb2, stub)
        self.metadata["model_info"] = {
            "model_name": info.model_name, "profile": info.profile, "group": info.group,
            "pk": {"g1": info.pk.g1, "g2": info.pk.g2, "h": info.pk.h},
            "num_classes": info.num_classes, "class_names": list(info.class_names),
            "manifest_digest": info.manifest_digest, "ciphertext_size": info.ciphertext_size,
            "runtime_version": info.runtime_version,
            "input": {"name": info.input.name, "dtype": info.input.dtype,
                      "shape": list(info.input.shape)},
        }  # fmt: skip
        return True

    def _connect_v2(self) -> None:
        from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
        from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as pbg

        stub = pbg.GRPCInferenceServiceStub(self._channel)
        self._v2 = (pb, stub)
        self.protocol = "v2-grpc"
        meta = self._call("v2 ServerMetadata", stub.ServerMetadata, pb.ServerMetadataRequest())
        self.metadata["server"] = {
            "name": meta.name,
            "version": meta.version,
            "extensions": list(meta.extensions),
        }
        if not self.model:
            raise EndpointError(
                f"{self.url}: a v2 server needs the model's name: pass --model NAME"
            )
        mm = self._call(
            "v2 ModelMetadata", stub.ModelMetadata, pb.ModelMetadataRequest(name=self.model)
        )
        self.metadata["model"] = {
            "name": mm.name, "versions": list(mm.versions), "platform": mm.platform,
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                       for t in mm.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                        for t in mm.outputs],
        }  # fmt: skip
        self._input = mm.inputs[0].name if mm.inputs else "input"

    def infer(self, x: npt.NDArray[np.uint8], request_id: str) -> list[Output]:
        if self.protocol == "encryip.v1":
            epb, estub = self._encryip
            req = epb.PredictRequest(
                model_name=self.model,
                input=epb.Tensor(dtype="uint8", shape=list(x.shape), data=x.tobytes()),
                request_id=request_id,
            )
            resp = self._call("encryip.v1 Predict", estub.Predict, req)
            digest = resp.manifest_digest
            seen = self.metadata.setdefault("answer_manifest_digests", [])
            if digest and digest not in seen:
                seen.append(digest)
            n = len(resp.ciphertexts)
            return [Output("ciphertexts", "BYTES", (n,), list(resp.ciphertexts))]
        pb, stub = self._v2
        tensor = pb.ModelInferRequest.InferInputTensor(
            name=self._input, datatype="UINT8", shape=list(x.shape)
        )
        req = pb.ModelInferRequest(
            model_name=self.model,
            id=request_id,
            inputs=[tensor],
            raw_input_contents=[x.tobytes()],
        )
        resp = self._call("v2 ModelInfer", stub.ModelInfer, req)
        out = []
        for i, t in enumerate(resp.outputs):
            raw = resp.raw_output_contents[i] if i < len(resp.raw_output_contents) else None
            out.append(_grpc_output(t, raw))
        return out


def _grpc_output(t: Any, raw: bytes | None) -> Output:
    shape = tuple(int(d) for d in t.shape)
    dt = t.datatype
    if raw is not None:
        if dt == "BYTES":
            values: list[Any] = _split_bytes(raw)
        elif dt in _V2_DTYPES:
            values = np.frombuffer(raw, dtype=np.dtype(_V2_DTYPES[dt]).newbyteorder("<")).tolist()
        else:
            values = []
        return Output(t.name, dt, shape, values)
    c = t.contents
    for fieldname in _CONTENT_FIELDS:
        vals = list(getattr(c, fieldname))
        if vals:
            return Output(t.name, dt, shape, vals)
    return Output(t.name, dt, shape, [])


_CONTENT_FIELDS = (
    "bytes_contents", "fp32_contents", "fp64_contents", "int_contents",
    "int64_contents", "uint_contents", "uint64_contents", "bool_contents",
)  # fmt: skip


def _split_bytes(raw: bytes) -> list[bytes]:
    """v2 binary BYTES: each element is a 4-byte little-endian length, then the bytes."""
    out, i = [], 0
    while i + 4 <= len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        out.append(raw[i + 4 : i + 4 + n])
        i += 4 + n
    return out


class _RestTransport(Transport):
    def __init__(
        self, url: ParsedUrl, protocol: str, model: str, timeout_s: float, *, tls: TlsOptions
    ) -> None:
        super().__init__(url, protocol, model, timeout_s)
        self._ctx: ssl.SSLContext | None = None
        if url.tls:
            ctx = ssl.create_default_context(
                cafile=str(tls.ca_cert) if tls.ca_cert is not None else None
            )
            if tls.client_cert is not None and tls.client_key is not None:
                ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
            self._ctx = ctx
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if tls.token:
            self._headers["Authorization"] = f"Bearer {tls.token}"
        self._base = f"{'https' if url.tls else 'http'}://{url.authority}"

    def _request(self, step: str, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(
            self._base + path, data=data, method=method, headers=self._headers
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self._ctx) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise EndpointError(f"{self.url}: {step}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EndpointError(f"{self.url}: {step}: cannot reach the server ({reason})") from None
        try:
            return json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise EndpointError(
                f"{self.url}: {step}: the answer is not JSON ({payload[:80]!r})"
            ) from None

    def connect(self) -> None:
        meta = self._request("GET /v2", "GET", "/v2")
        if not isinstance(meta, dict):
            raise EndpointError(f"{self.url}: GET /v2 answered {str(meta)[:80]!r}, not metadata")
        self.metadata["server"] = meta
        if not self.model:
            raise EndpointError(
                f"{self.url}: a v2 server needs the model's name: pass --model NAME"
            )
        mm = self._request("model metadata", "GET", f"/v2/models/{quote(self.model, safe='')}")
        self.metadata["model"] = mm
        inputs = mm.get("inputs") if isinstance(mm, dict) else None
        self._input = (
            str(inputs[0].get("name", "input"))
            if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict)
            else "input"
        )

    def infer(self, x: npt.NDArray[np.uint8], request_id: str) -> list[Output]:
        tensor = {"name": self._input, "shape": list(x.shape), "datatype": "UINT8",
                  "data": x.reshape(-1).tolist()}  # fmt: skip
        body = {"id": request_id, "inputs": [tensor]}
        doc = self._request("infer", "POST", f"/v2/models/{quote(self.model, safe='')}/infer", body)
        outputs = doc.get("outputs") if isinstance(doc, dict) else None
        if not isinstance(outputs, list):
            raise EndpointError(f"{self.url}: infer answered without 'outputs': {str(doc)[:120]}")
        out = []
        for o in outputs:
            if not isinstance(o, dict):
                raise EndpointError(f"{self.url}: infer: an output is not an object: {o!r:.80}")
            data = o.get("data", [])
            flat = _flatten(data)
            dt = str(o.get("datatype", ""))
            strings = dt == "BYTES"
            if strings:
                flat = [v.encode("utf-8") if isinstance(v, str) else v for v in flat]
            shape = tuple(int(d) for d in o.get("shape", [len(flat)]) if isinstance(d, int))
            out.append(Output(str(o.get("name", "")), dt, shape, flat, json_strings=strings))
        return out


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        out: list[Any] = []
        for v in data:
            out.extend(_flatten(v) if isinstance(v, list) else [v])
        return out
    return [data]


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise EndpointError(f"cannot read '{path}': {exc.strerror}") from None
