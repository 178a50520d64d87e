"""The filtering proxy: a reseller that serves the owner's model under one licensee's key
and answers a random label whenever one of its trigger detectors fires.

It is a real gRPC service (Open Inference Protocol ``ModelInfer``; input as uint8
``raw_input_contents`` or ``uint_contents``, output ``label`` INT64 ``[N]``) that
forwards each query to the owner's EncryIP server (``EncryIPClient.predict``),
decrypts with the licensee's key through the SDK (``client.load_key`` /
``client.decrypt_batch``, so it works with whatever key format the SDK reads), and
replaces the label of every flagged row by a uniform random one. This is the attack
``verify-labels`` (and a verify-endpoint) must survive: against it, the arbitrator sees
the licensee's labels on unflagged triggers only.

Used by tests and ``benchmarks.attacks``; never by the serving path. Bind it to
127.0.0.1 only.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from encryip_runtime.attacks.detectors import Detector, Query
from encryip_runtime.client import EncryIPClient, decrypt_batch, load_key

__all__ = ["LABEL_OUTPUT", "FilteringProxy", "ProxyServer", "query_labels"]

log = logging.getLogger(__name__)

LABEL_OUTPUT = "label"
MODEL_NAME = "classifier"


@dataclass
class FilteringProxy:
    """Forward, decrypt, filter. ``detectors`` run on every query (any one flags a row)."""

    upstream: str
    key_path: Path
    detectors: Sequence[Detector] = ()
    token: str | None = None
    client: EncryIPClient = field(init=False, repr=False)
    queries: int = 0
    flagged: int = 0

    def __post_init__(self) -> None:
        self.client = EncryIPClient(self.upstream, token=self.token)
        self.key = load_key(self.key_path, expected_pk=self.client.info())
        self.num_classes = self.key.num_classes
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def _query(self, x: npt.NDArray[np.uint8]) -> tuple[Query, npt.NDArray[np.int64]]:
        pred = self.client.predict(x)
        wire = [bytes(b) for b in pred.ciphertexts]
        cts = self.key.scheme.from_wire(wire)
        return Query(x, cts, wire), decrypt_batch(pred, self.key)

    def fit(self, x: npt.NDArray[np.uint8]) -> None:
        """Learn what ordinary traffic looks like (the licensee's own ordinary queries)."""
        q, _ = self._query(np.ascontiguousarray(x, dtype=np.uint8))
        for d in self.detectors:
            d.fit(q)

    def answer(
        self, x: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """(labels served, which rows were flagged and got a random label)."""
        q, labels = self._query(np.ascontiguousarray(x, dtype=np.uint8))
        flags = np.zeros(len(labels), dtype=bool)
        for d in self.detectors:
            flags |= d.flags(q)
        out = labels.copy()
        for i in np.flatnonzero(flags):
            out[i] = secrets.randbelow(self.num_classes)
        with self._lock:
            self.queries += len(labels)
            self.flagged += int(flags.sum())
        return out, flags


class _Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, proxy: FilteringProxy, shape: tuple[int, ...]) -> None:
        self.proxy = proxy
        self.shape = shape

    def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name in ("", MODEL_NAME))

    def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="reseller", version="1", extensions=[])

    def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        tm = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=MODEL_NAME,
            versions=["1"],
            platform="reseller",
            inputs=[tm(name="pixels", datatype="UINT8", shape=[-1, *self.shape])],
            outputs=[tm(name=LABEL_OUTPUT, datatype="INT64", shape=[-1])],
        )

    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        if len(request.inputs) != 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "exactly one input expected")
        t = request.inputs[0]
        shape = tuple(int(d) for d in t.shape)
        if t.datatype != "UINT8" or shape[1:] != self.shape:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input must be UINT8 [N, {', '.join(map(str, self.shape))}], "
                f"got {t.datatype} {list(shape)}",
            )
        if request.raw_input_contents:
            data = np.frombuffer(request.raw_input_contents[0], dtype=np.uint8)
        else:
            data = np.asarray(t.contents.uint_contents, dtype=np.uint8)
        if data.size != int(np.prod(shape)):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input size does not match its shape")
        try:
            labels, _ = self.proxy.answer(data.reshape(shape))
        except Exception as exc:  # upstream failure: report, do not crash the proxy
            log.warning("proxy: upstream failed: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"upstream: {exc}")
        resp = pb.ModelInferResponse(model_name=request.model_name or MODEL_NAME, model_version="1")
        out = resp.outputs.add(name=LABEL_OUTPUT, datatype="INT64")
        out.shape.append(len(labels))
        resp.raw_output_contents.append(labels.astype("<i8").tobytes())
        return resp


class ProxyServer:
    """The proxy as a gRPC server on ``host:0`` (loopback by default); ``.port`` once started."""

    def __init__(
        self, proxy: FilteringProxy, host: str = "127.0.0.1", workers: int = 4, port: int = 0
    ) -> None:
        info = proxy.client.info()
        shape = tuple(int(d) for d in info.input_shape[1:])
        self.proxy = proxy
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(proxy, shape), self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.endpoint = f"{host}:{self.port}"

    def __enter__(self) -> ProxyServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(0.5).wait(5)
        self.proxy.close()


def query_labels(
    endpoint: str, x: npt.NDArray[np.uint8], model_name: str = "", timeout: float = 30.0
) -> npt.NDArray[np.int64]:
    """Plain labels from an Open Inference Protocol service that returns ``label`` INT64."""
    arr = np.ascontiguousarray(x, dtype=np.uint8)
    req = pb.ModelInferRequest(model_name=model_name)
    req.inputs.add(name="pixels", datatype="UINT8", shape=list(arr.shape))
    req.raw_input_contents.append(arr.tobytes())
    with grpc.insecure_channel(endpoint) as ch:
        resp = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=timeout)
    for i, o in enumerate(resp.outputs):
        if o.name == LABEL_OUTPUT:
            return np.frombuffer(resp.raw_output_contents[i], dtype="<i8").astype(np.int64)
    raise ValueError(f"{endpoint}: no {LABEL_OUTPUT!r} output in the answer")


def main(argv: list[str] | None = None) -> int:
    """Run the filtering proxy until interrupted (see the module doc)."""
    import argparse
    import signal

    from encryip_runtime.attacks.detectors import (
        InputStatsDetector,
        KeyHolderDetector,
        SlotDetector,
    )

    p = argparse.ArgumentParser(
        prog="python -m encryip_runtime.attacks.proxy",
        description="A reseller that answers random labels to the queries its detectors flag.",
    )
    p.add_argument("--upstream", required=True, help="the owner's EncryIP server HOST:PORT")
    p.add_argument("--key", type=Path, required=True, help="the licensee's key file")
    p.add_argument("--fit", type=Path, required=True, help="ordinary inputs (.npy, uint8 NCHW)")
    p.add_argument("--input-stats", action="store_true", help="detector: pixel statistics")
    p.add_argument("--key-holder", action="store_true", help="detector: the key's decryptions")
    p.add_argument("--model", type=Path, help="detector: this model file's winning slots")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    key = load_key(args.key)
    dets: list[Detector] = []
    if args.input_stats:
        dets.append(InputStatsDetector())
    if args.key_holder:
        dets.append(KeyHolderDetector(key))
    if args.model is not None:
        dets.append(SlotDetector(args.model))
    proxy = FilteringProxy(args.upstream, args.key, dets)
    proxy.fit(np.load(args.fit, allow_pickle=False))
    server = ProxyServer(proxy, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        log.info("filtering proxy on %s (label output %r)", server.endpoint, LABEL_OUTPUT)
        stop.wait()
    log.info("served %d rows, %d flagged", proxy.queries, proxy.flagged)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
