"""The Open Inference Protocol v2 over HTTP/REST (aiohttp), on the server's event loop.

Same request path as gRPC: the handler decodes the body, ``Predictor.predict`` queues the
rows in that model's ``MicroBatcher`` and awaits them; the model runs on the batch
threads, never on this loop. Routes (``{v}`` optional everywhere):

* ``GET  /v2/health/live``, ``/v2/health/ready`` -- 200, or 400 when not ready (the spec's
  4xx); empty body. No token needed (probes).
* ``GET  /v2/models/{m}[/versions/{v}]/ready`` -- 200 / 400, 404 for an unknown model.
* ``GET  /v2`` -- server metadata; ``GET /v2/models/{m}[/versions/{v}]`` -- model metadata.
* ``GET  /v2/models/{m}[/versions/{v}]/encryip`` -- EncryIP's extension: the public key,
  profile, class names and ciphertext width (``encryip.v1 GetModelInfo`` as JSON).
* ``POST /v2/models/{m}[/versions/{v}]/infer`` -- JSON tensors, or the binary tensor data
  extension: the body is ``Inference-Header-Content-Length`` bytes of JSON, then each
  input with ``parameters.binary_data_size`` back to back. Outputs come back as JSON
  (``ciphertext``: hex strings) unless ``parameters.binary_data`` is set on an output or
  ``binary_data_output`` on the request; then the response is the JSON header followed
  by the raw output (``ciphertext``: 4-byte little-endian length + wire bytes per row).

* ``POST /v2/repository/index`` (``{"ready": true}`` optional), ``POST
  /v2/repository/models/{m}/load`` and ``.../unload`` -- the model repository extension
  (Triton's REST form); load/unload need ``--model-control explicit``.

Errors are ``{"error": message}`` with the HTTP status of ``status.http_status_for``.
A request may carry a deadline as ``parameters.timeout`` in microseconds (tritonclient's
``timeout=``); past it the answer is 504 and a still-queued request is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web

from encryip_runtime.exceptions import InputError
from encryip_runtime.server.health import HealthState
from encryip_runtime.server.licensees import LicenseeGate
from encryip_runtime.server.metrics import ServerMetrics
from encryip_runtime.server.model_store import LoadedModel
from encryip_runtime.server.oip import (
    CIPHERTEXT_OUTPUT,
    check_outputs,
    encryip_model_info,
    model_metadata,
    server_metadata,
)
from encryip_runtime.server.predictor import Predictor
from encryip_runtime.server.security import BearerAuth
from encryip_runtime.server.status import (
    DeadlineExpiredError,
    LimitExceededError,
    NotReadyError,
    RequestTooLargeError,
    http_status_for,
)
from encryip_runtime.server.tensors import (
    KSERVE_DATATYPES,
    decode_tensor,
    dtype_from_kserve,
    pack_bytes_elements,
)

__all__ = ["HEADER_LENGTH", "RestFrontend"]

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
_JSON = "application/json"
_BINARY = "application/octet-stream"
# Paths that answer without a token (Kubernetes probes; they reveal nothing).
_PUBLIC_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
# Bodies above this are parsed on a worker thread, not on the event loop.
_PARSE_OFF_LOOP_BYTES = 64 * 1024
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Where the auth middleware leaves the calling licensee (--tokens-file) for the handler.
_LICENSEE = web.RequestKey("encryip.licensee", str)


@dataclass(frozen=True)
class _InferRequest:
    """A decoded v2 inference request (one input, as every EncryIP model takes)."""

    id: str | None
    x: npt.NDArray[Any]
    outputs: list[str]
    binary: dict[str, bool]
    timeout_s: float | None


class RestFrontend:
    """The REST routes of one server. ``start``/``stop`` run on the server's event loop."""

    def __init__(
        self,
        predictor: Predictor,
        metrics: ServerMetrics,
        health: HealthState,
        *,
        auth: BearerAuth | None,
        licensees: LicenseeGate | None = None,
        max_body_bytes: int,
        cors_origins: Sequence[str] = (),
        extensions: Sequence[str] = ("binary_tensor_data",),
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        self._predictor = predictor
        self._metrics = metrics
        self._health = health
        self._auth = auth
        self._licensees = licensees
        self._max_body = max_body_bytes
        self._cors = tuple(cors_origins)
        self._extensions = list(extensions)
        self._shutdown_timeout = shutdown_timeout_s
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self._max_body,
            middlewares=[self._cors_mw, self._errors_mw, self._auth_mw],
        )
        r = app.router
        r.add_get("/v2/health/live", self._live)
        r.add_get("/v2/health/ready", self._ready)
        r.add_get("/v2", self._server_metadata)
        r.add_get("/v2/", self._server_metadata)
        r.add_post("/v2/repository/index", self._repository_index)
        r.add_post("/v2/repository/models/{model}/load", self._repository_load)
        r.add_post("/v2/repository/models/{model}/unload", self._repository_unload)
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            r.add_get(base, self._model_metadata)
            r.add_get(base + "/ready", self._model_ready)
            r.add_get(base + "/encryip", self._encryip_info)
            r.add_post(base + "/infer", self._infer)
        return app

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        """Bind and serve; returns the bound port (``port`` 0 picks a free one)."""
        self._runner = web.AppRunner(
            self.app(),
            access_log=None,
            handler_cancellation=True,  # a client that goes away cancels its queued rows
            # Cleanup waits this long for handlers still running. ``stop`` is called after
            # the predictor drained, so only metadata calls and slow senders are left.
            shutdown_timeout=self._shutdown_timeout,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context, reuse_port=False)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(f"cannot bind the REST port {host}:{port}: {exc.strerror}") from None
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        return self.port

    async def stop(self) -> None:
        """Close the port, then the open connections (handlers still running get the
        shutdown timeout)."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        await runner.cleanup()

    # -- middlewares -----------------------------------------------------------------

    @web.middleware
    async def _cors_mw(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and ("*" in self._cors or origin in self._cors)
        if allowed and request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                f"Authorization, Content-Type, {HEADER_LENGTH}"
            )
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if allowed:
            assert origin is not None
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = HEADER_LENGTH
            response.headers["Vary"] = "Origin"
        return response

    @web.middleware
    async def _errors_mw(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:  # routing (404, 405) and aiohttp's own limits
            if exc.status == 413:
                return _error(413, f"request body larger than {self._max_body} bytes")
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason, headers=exc.headers)
        except Exception as exc:
            status, _code, message = http_status_for(exc)
            if status >= 500 and status != 503 and status != 504:
                log.error("REST %s failed: %s", request.path, type(exc).__name__, exc_info=exc)
            retry = (
                getattr(exc, "retry_after_s", None) if isinstance(exc, LimitExceededError) else None
            )
            headers = {"Retry-After": str(max(1, math.ceil(retry)))} if retry else None
            return _error(status, message, headers=headers)

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if self._auth is not None and request.path not in _PUBLIC_PATHS:
            presented = request.headers.get("Authorization", "").encode("utf-8", "replace")
            self._auth.check(presented)  # UnauthenticatedError -> 401
        if self._licensees is not None and request.path not in _PUBLIC_PATHS:
            # per-licensee tokens (--tokens-file): the same gate as the gRPC interceptor
            request[_LICENSEE] = self._licensees.authenticate(request.headers.get("Authorization"))
        return await handler(request)

    # -- health and metadata ---------------------------------------------------------

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self._health.serving and self._predictor.ready()
        return web.Response(status=200 if ready else 400)

    async def _model_ready(self, request: web.Request) -> web.Response:
        name, version = _model_of(request)
        if self._health.serving and self._predictor.ready(name, version):
            return web.Response(status=200)
        # Unknown model/version: 404. Draining or not loaded: "not ready" is the spec's
        # 4xx, not the 503 a prediction would get.
        with contextlib.suppress(NotReadyError):
            self._predictor.resolve(name, version)
        return web.Response(status=400)

    async def _server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(server_metadata(self._extensions))

    async def _model_metadata(self, request: web.Request) -> web.Response:
        name, version = _model_of(request)
        loaded = self._predictor.resolve(name, version)
        return web.json_response(model_metadata(loaded, self._predictor.versions(loaded.name)))

    async def _encryip_info(self, request: web.Request) -> web.Response:
        name, version = _model_of(request)
        return web.json_response(encryip_model_info(self._predictor.resolve(name, version)))

    # -- model repository extension -------------------------------------------------

    async def _repository_index(self, request: web.Request) -> web.Response:
        body = await _read_body(request, self._max_body)
        ready_only = False
        if body.strip():
            ready_only = _json_object(body).get("ready") is True
        rows = self._predictor.repository.index(ready_only=ready_only)
        return web.json_response(
            [{"name": r.name, "version": r.version, "state": r.state, "reason": r.reason}
             for r in rows]
        )  # fmt: skip

    async def _repository_load(self, request: web.Request) -> web.Response:
        # Reads files and builds an onnxruntime session: off the loop.
        await asyncio.to_thread(self._predictor.repository.load, request.match_info["model"])
        return web.Response(status=200)

    async def _repository_unload(self, request: web.Request) -> web.Response:
        # Waits for the model's queued requests, which this loop answers: off the loop.
        await asyncio.to_thread(self._predictor.repository.unload, request.match_info["model"])
        return web.Response(status=200)

    # -- inference -------------------------------------------------------------------

    async def _infer(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        code = "OK"
        try:
            return await self._infer_inner(request)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            code = http_status_for(exc)[1].name
            raise
        finally:
            self._metrics.observe_request("REST/ModelInfer", code, time.perf_counter() - t0)

    async def _infer_inner(self, request: web.Request) -> web.Response:
        name, version = _model_of(request)
        loaded = self._predictor.resolve(name, version)
        body = await _read_body(request, self._max_body)
        header_length = request.headers.get(HEADER_LENGTH)
        if len(body) > _PARSE_OFF_LOOP_BYTES:
            parsed = await asyncio.to_thread(_parse_infer, body, header_length, loaded)
        else:
            parsed = _parse_infer(body, header_length, loaded)
        licensee: str | None = request.get(_LICENSEE)
        n_rows = int(parsed.x.shape[0]) if parsed.x.ndim else 0
        if licensee is not None:
            assert self._licensees is not None
            self._licensees.admit(licensee, n_rows)  # LimitExceededError -> 429
        predict = self._predictor.predict(
            loaded, parsed.x, onehot="onehot" in parsed.outputs, timeout_s=parsed.timeout_s
        )
        try:
            if parsed.timeout_s is None:
                pred = await predict
            else:
                try:
                    pred = await asyncio.wait_for(predict, parsed.timeout_s)
                except TimeoutError:
                    raise DeadlineExpiredError("deadline passed (parameters.timeout)") from None
        except BaseException:
            if licensee is not None:
                assert self._licensees is not None
                self._licensees.record(licensee, n_rows, ok=False)
            raise
        if licensee is not None:
            assert self._licensees is not None
            self._licensees.record(licensee, n_rows, ok=True)
        head: dict[str, Any] = {"model_name": pred.model.name, "model_version": pred.model.version}
        if parsed.id is not None:
            head["id"] = parsed.id
        outputs: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        for out_name in parsed.outputs:
            if out_name == CIPHERTEXT_OUTPUT:
                rows = [r.tobytes() for r in pred.wire]
                out: dict[str, Any] = {"name": out_name, "datatype": "BYTES", "shape": [len(rows)]}
                if parsed.binary[out_name]:
                    blob = pack_bytes_elements(rows)
                else:
                    out["data"] = [r.hex() for r in rows]
            else:
                assert pred.onehot is not None
                onehot = pred.onehot.astype("<f4", copy=False)
                out = {"name": out_name, "datatype": "FP32", "shape": list(onehot.shape)}
                if parsed.binary[out_name]:
                    blob = onehot.tobytes()
                else:
                    out["data"] = onehot.reshape(-1).tolist()
            if parsed.binary[out_name]:
                out["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            outputs.append(out)
        head["outputs"] = outputs
        header = json.dumps(head, separators=(",", ":")).encode()
        if not blobs:
            return web.Response(body=header, content_type=_JSON)
        response = web.Response(body=b"".join([header, *blobs]), content_type=_BINARY)
        response.headers[HEADER_LENGTH] = str(len(header))
        return response


def _model_of(request: web.Request) -> tuple[str, str]:
    return request.match_info["model"], request.match_info.get("version", "")


def _error(status: int, message: str, headers: Any = None) -> web.Response:
    response = web.json_response({"error": message}, status=status)
    for name in ("Allow", "Retry-After"):
        if headers is not None and name in headers:
            response.headers[name] = headers[name]
    return response


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise RequestTooLargeError(f"request body larger than {limit} bytes")
    return await request.read()  # aiohttp enforces client_max_size (413) while reading


def _json_object(body: bytes) -> dict[str, Any]:
    """A request body's JSON object (InputError for anything else)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"request body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError("request body must be a JSON object")
    return doc


def _parse_infer(body: bytes, header_length: str | None, loaded: LoadedModel) -> _InferRequest:
    """The body of an infer request -> the input array and what to return (InputError)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise InputError(f"{HEADER_LENGTH}: not an integer: {header_length[:32]!r}") from None
        if not 0 <= n <= len(body):
            raise InputError(f"{HEADER_LENGTH}: {n} is outside the body (0..{len(body)} bytes)")
        head_bytes, binary = body[:n], memoryview(body)[n:]
    else:
        head_bytes, binary = body, memoryview(b"")
    head = _json_object(head_bytes)
    req_id = head.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise InputError("'id' must be a string")
    params = _parameters(head.get("parameters"), "parameters")
    inputs = head.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        count = len(inputs) if isinstance(inputs, list) else "no"
        raise InputError(f"expected exactly 1 input tensor ({loaded.spec.name!r}), got {count}")
    x = _input_array(inputs[0], binary, loaded)
    outputs = head.get("outputs", [])
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InputError("'outputs' must be a list of objects with a 'name'")
    names = check_outputs(loaded, [o["name"] for o in outputs])
    all_binary = params.get("binary_data_output") is True
    binary_out = {name: all_binary for name in names}
    for o in outputs:
        out_params = _parameters(o.get("parameters"), f"outputs[{o['name'][:64]!r}].parameters")
        if "binary_data" in out_params:
            binary_out[o["name"]] = out_params["binary_data"] is True
    timeout_s = None
    if "timeout" in params:
        t = params["timeout"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0:
            raise InputError("parameters.timeout: must be a non-negative number (microseconds)")
        timeout_s = float(t) / 1e6 if t > 0 else None
    return _InferRequest(req_id, x, names, binary_out, timeout_s)


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: must be a JSON object")
    return value


def _input_array(tensor: Any, binary: memoryview, loaded: LoadedModel) -> npt.NDArray[Any]:
    if not isinstance(tensor, dict):
        raise InputError("inputs[0] must be a JSON object")
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if name != loaded.spec.name:
        shown = name[:64] if isinstance(name, str) else name
        raise InputError(f"unknown input {shown!r}: model takes {loaded.spec.name!r}")
    if not isinstance(datatype, str):
        raise InputError(f"input {name!r}: 'datatype' must be a string")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InputError(f"input {name!r}: 'shape' must be a list of integers")
    dtype = dtype_from_kserve(datatype)
    params = _parameters(tensor.get("parameters"), f"input {name!r} parameters")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InputError(f"input {name!r}: binary_data_size must be a non-negative integer")
        if "data" in tensor:
            raise InputError(f"input {name!r} has both 'data' and binary_data_size")
        if size != len(binary):
            raise InputError(
                f"input {name!r}: binary_data_size is {size} but {len(binary)} bytes follow "
                f"the {HEADER_LENGTH} header"
            )
        return decode_tensor(dtype, shape, bytes(binary))
    if len(binary):
        raise InputError(f"{len(binary)} binary bytes follow the JSON but no input claims them")
    if "data" not in tensor:
        raise InputError(f"input {name!r}: no 'data' (nor parameters.binary_data_size)")
    return decode_tensor(dtype, shape, _json_data(tensor["data"], datatype, dtype, shape))


def _json_data(data: Any, datatype: str, dtype: np.dtype[Any], shape: list[int]) -> bytes:
    """JSON tensor data (nested or flat, row-major) -> raw little-endian bytes."""
    if not isinstance(data, list):
        raise InputError("input 'data' must be a JSON array")
    count = math.prod(shape) if shape else 0
    try:
        arr = np.asarray(data)
    except ValueError:
        raise InputError("input 'data' is ragged (rows of different lengths)") from None
    if arr.size != count:
        raise InputError(f"input 'data' has {arr.size} values, shape {shape} needs {count}")
    if arr.size == 0:
        return b""
    kind = arr.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise InputError("BOOL input 'data' must hold true/false")
    elif datatype.startswith(("UINT", "INT")):
        if kind not in "iu":
            raise InputError(f"{datatype} input 'data' must hold integers")
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise InputError(f"input values out of range for {datatype}")
    elif kind not in "iuf":  # FP16/FP32/FP64
        raise InputError(f"{datatype} input 'data' must hold numbers")
    if datatype not in KSERVE_DATATYPES:  # pragma: no cover - dtype_from_kserve checked it
        raise InputError(f"unsupported datatype {datatype!r}")
    return arr.astype(dtype.newbyteorder("<"), copy=False).tobytes()
