"""gRPC conventions clients expect: server reflection v1 and v1alpha, health ``List``."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc

from encryip_runtime._generated.grpc.reflection.v1 import reflection_pb2 as v1_pb2
from encryip_runtime._generated.grpc.reflection.v1 import reflection_pb2_grpc as v1_grpc
from encryip_runtime.server.health import HEALTH_SERVICE_NAMES

from .conftest import free_port, running_server

SERVICES = {
    "encryip.v1.EncryIP",
    "inference.GRPCInferenceService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}

VERSIONS = [(v1_pb2, v1_grpc), (v1alpha_pb2, v1alpha_grpc)]


def _reflect(port: int, pb: Any, stub_mod: Any, requests: list[Any]) -> list[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = stub_mod.ServerReflectionStub(channel)
        return list(stub.ServerReflectionInfo(iter(requests), timeout=10))


@pytest.mark.parametrize(("pb", "stub_mod"), VERSIONS, ids=["v1", "v1alpha"])
def test_reflection_lists_and_describes(secure_release: Any, pb: Any, stub_mod: Any) -> None:
    with running_server(secure_release.licensee_dir("acme")) as server:
        listed, described, missing = _reflect(
            server.port,
            pb,
            stub_mod,
            [
                pb.ServerReflectionRequest(list_services=""),
                pb.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
                pb.ServerReflectionRequest(file_containing_symbol="no.such.Service"),
            ],
        )
    assert {s.name for s in listed.list_services_response.service} == SERVICES
    protos = described.file_descriptor_response.file_descriptor_proto
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in protos]
    methods = {m.name for f in files for s in f.service for m in s.method}
    assert {"ModelInfer", "ModelMetadata", "ServerLive"} <= methods
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_reflection_v1_describes_itself(secure_release: Any) -> None:
    with running_server(secure_release.licensee_dir("acme")) as server:
        (resp,) = _reflect(
            server.port,
            v1_pb2,
            v1_grpc,
            [
                v1_pb2.ServerReflectionRequest(
                    file_containing_symbol="grpc.reflection.v1.ServerReflection"
                )
            ],
        )
    (raw,) = resp.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(raw).package == "grpc.reflection.v1"


def test_health_list_on_both_ports(secure_release: Any) -> None:
    hport = free_port()
    with running_server(secure_release.licensee_dir("acme"), health_port=hport) as server:
        for port in (server.port, hport):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                resp = health_pb2_grpc.HealthStub(channel).List(
                    health_pb2.HealthListRequest(), timeout=5
                )
            assert set(resp.statuses) == set(HEALTH_SERVICE_NAMES)
            assert {s.status for s in resp.statuses.values()} == {
                health_pb2.HealthCheckResponse.SERVING
            }
        server.health.set_serving(False)
        with grpc.insecure_channel(f"127.0.0.1:{hport}") as channel:
            resp = health_pb2_grpc.HealthStub(channel).List(
                health_pb2.HealthListRequest(), timeout=5
            )
        assert {s.status for s in resp.statuses.values()} == {
            health_pb2.HealthCheckResponse.NOT_SERVING
        }
