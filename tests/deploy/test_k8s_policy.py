"""What the rendered manifests promise: Pod Security "restricted", probes that match the
server, consistent ports and selectors, graceful shutdown, no secret key in the cluster."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from encryip_runtime._generated.encryip.v1 import encryip_pb2
from encryip_runtime._generated.inference import grpc_predict_v2_pb2
from encryip_runtime.server.config import ENV_PREFIX, ServerConfig
from encryip_runtime.server.health import HEALTH_SERVICE_NAMES

from .helpers import ALL_TARGETS, RUNTIME_TARGETS, one, runtime_config, runtime_container

Docs = dict[str, list[dict[str, Any]]]
POD_KINDS = ("Deployment", "Job", "StatefulSet", "DaemonSet", "CronJob")
TLS_SECRET = "encryip-tls"
TLS_ITEMS = {"tls.crt", "tls.key", "ca.crt"}
# A licensee key (keys/<licensee>.key), the vault, or the keys folder of a release.
SECRET_FILE = re.compile(r"vault|(^|/)keys(/|$)|(?<!tls)\.key\b", re.IGNORECASE)


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] in POD_KINDS:
            spec = d["spec"]
            if d["kind"] == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            out.append((f"{d['kind']}/{d['metadata']['name']}", spec["template"]["spec"]))
    return out


def all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def server_config(docs: list[dict[str, Any]], tmp_path: Path) -> ServerConfig:
    """Parse the ConfigMap exactly as the server does (ENCRYIP_* env), TLS files stubbed."""
    env = runtime_config(docs)
    for key, value in list(env.items()):
        if key in (f"{ENV_PREFIX}TLS_CERT", f"{ENV_PREFIX}TLS_KEY", f"{ENV_PREFIX}TLS_CLIENT_CA"):
            stub = tmp_path / Path(value).name
            stub.write_text("stub")
            env[key] = str(stub)
    return ServerConfig.from_env(environ=env, release_dir=tmp_path)


def probe_budget(probe: dict[str, Any]) -> int:
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get(
        "failureThreshold", 3
    )


# -- Pod Security "restricted" ---------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_pods_meet_pod_security_restricted(rendered: Docs, target: str) -> None:
    pods = pod_specs(rendered[target])
    if target != "monitoring":
        assert pods
    for where, pod in pods:
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True, where
        assert ctx.get("runAsUser", 1) != 0, where
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(host), f"{where}: {host}"
        assert not any("hostPath" in v for v in pod.get("volumes", [])), where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in all_containers(pod):
            sc = c["securityContext"]
            name = f"{where}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc["capabilities"].get("add"), name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert not sc.get("privileged"), name
            assert sc.get("runAsUser", 1) != 0, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{name}: {kind}"
        # Writable scratch space is an emptyDir at /tmp (read-only root filesystem).
        for c in pod["containers"]:
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp"


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_namespaces_enforce_restricted(rendered: Docs, target: str) -> None:
    namespaced = [d for d in rendered[target] if d["kind"] != "Namespace"]
    for d in namespaced:
        assert d["metadata"].get("namespace"), f"{d['kind']}/{d['metadata']['name']}: namespace"
    for ns in (d for d in rendered[target] if d["kind"] == "Namespace"):
        labels = ns["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# -- the runtime Deployment against the real server ---------------------------------------


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_configmap_is_a_valid_server_config(rendered: Docs, target: str, tmp_path: Path) -> None:
    env = runtime_config(rendered[target])
    for key in env:
        assert key.startswith(ENV_PREFIX), key
    server_config(rendered[target], tmp_path)  # raises ConfigError listing every problem


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_ports_match_the_server(rendered: Docs, target: str, tmp_path: Path) -> None:
    docs = rendered[target]
    cfg = server_config(docs, tmp_path)
    deployment = one(docs, "Deployment", "encryip")
    c = runtime_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": cfg.port, "health": cfg.health_port, "metrics": cfg.metrics_port}
    assert c["args"] == ["/models/release"], "same as the image's CMD"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(cfg.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_probes_are_grpc_health_on_the_plaintext_port(
    rendered: Docs, target: str, tmp_path: Path
) -> None:
    cfg = server_config(rendered[target], tmp_path)
    c = runtime_container(one(rendered[target], "Deployment", "encryip"))
    registered = {
        *(s.full_name for s in encryip_pb2.DESCRIPTOR.services_by_name.values()),
        *(s.full_name for s in grpc_predict_v2_pb2.DESCRIPTOR.services_by_name.values()),
    }
    assert set(HEALTH_SERVICE_NAMES) == {"", *registered}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c[kind]
        assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, kind
        assert probe["grpc"]["port"] == cfg.health_port, kind
        assert probe["grpc"].get("service", "") in HEALTH_SERVICE_NAMES, kind
    # Ready means the encryip.v1 service itself answers.
    assert c["readinessProbe"]["grpc"]["service"] == "encryip.v1.EncryIP"


@pytest.mark.parametrize(("target", "at_least"), [("overlays/cpu", 120), ("overlays/gpu", 300)])
def test_startup_budget_covers_a_slow_model_load(
    rendered: Docs, target: str, at_least: int
) -> None:
    c = runtime_container(one(rendered[target], "Deployment", "encryip"))
    assert probe_budget(c["startupProbe"]) >= at_least
    # Liveness only takes over after startup succeeded: it may be much shorter.
    assert probe_budget(c["livenessProbe"]) < probe_budget(c["startupProbe"])


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_termination_grace_outlasts_prestop_and_drain(
    rendered: Docs, target: str, tmp_path: Path
) -> None:
    cfg = server_config(rendered[target], tmp_path)
    deployment = one(rendered[target], "Deployment", "encryip")
    pod = deployment["spec"]["template"]["spec"]
    command = runtime_container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop >= 3, "give endpoints time to drop the pod before draining"
    assert pod["terminationGracePeriodSeconds"] > pre_stop + cfg.drain_seconds + 5


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_rolling_update_keeps_capacity_and_spreads(rendered: Docs, target: str) -> None:
    deployment = one(rendered[target], "Deployment", "encryip")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    keys = {s["topologyKey"] for s in spread}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys
    for s in spread:
        assert s["labelSelector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_services_hpa_pdb_netpol_select_the_pods(
    rendered: Docs, target: str, tmp_path: Path
) -> None:
    docs = rendered[target]
    cfg = server_config(docs, tmp_path)
    deployment = one(docs, "Deployment", "encryip")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in runtime_container(deployment)["ports"]}

    service = one(docs, "Service", "encryip")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name["grpc"]["port"] == cfg.port and by_name["grpc"]["targetPort"] == "grpc"
    assert by_name["metrics"]["port"] == cfg.metrics_port
    assert "health" not in by_name, "probes are the kubelet's, not a Service's"
    headless = one(docs, "Service", "encryip-headless")
    assert headless["spec"]["clusterIP"] == "None"
    for svc in (service, headless):
        assert {str(p["targetPort"]) for p in svc["spec"]["ports"]} <= port_names

    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]

    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]

    netpol = one(docs, "NetworkPolicy")
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(netpol["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert netpol["spec"]["egress"] == [], "the runtime talks to nothing"
    allowed = {p["port"] for rule in netpol["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {"grpc", "metrics"} and allowed <= port_names


def test_servicemonitor_scrapes_the_metrics_port(rendered: Docs) -> None:
    monitor = one(rendered["monitoring"], "ServiceMonitor")
    base = rendered["overlays/cpu"]
    service = one(base, "Service", "encryip")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"


def test_gpu_overlay_requests_a_gpu_and_the_gpu_image(rendered: Docs) -> None:
    c = runtime_container(one(rendered["overlays/gpu"], "Deployment", "encryip"))
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "gpu" in c["image"]
    cpu = runtime_container(one(rendered["overlays/cpu"], "Deployment", "encryip"))
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"] and "gpu" not in cpu["image"]


def test_intra_op_threads_follow_the_cpu_limit(rendered: Docs) -> None:
    c = runtime_container(one(rendered["overlays/cpu"], "Deployment", "encryip"))
    env = {e["name"]: e for e in c["env"]}
    ref = env[f"{ENV_PREFIX}INTRA_OP_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.cpu" and ref["containerName"] == c["name"]


# -- release delivery and secrets ----------------------------------------------------


def walk_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (str(k), *walk_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in walk_strings(v)]
    return [str(node)]


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_no_secret_objects_in_the_repository(rendered: Docs, target: str) -> None:
    kinds = {d["kind"] for d in rendered[target]}
    assert "Secret" not in kinds, "secrets are created out of band, never committed"


@pytest.mark.parametrize("target", [*RUNTIME_TARGETS, "monitoring"])
def test_runtime_mounts_no_licensee_key_or_vault(rendered: Docs, target: str) -> None:
    for text in walk_strings(rendered[target]):
        assert not SECRET_FILE.search(text), f"{target}: {text!r} looks like a key or vault"
    for where, pod in pod_specs(rendered[target]):
        for v in pod.get("volumes", []):
            if "secret" in v:
                assert v["secret"]["secretName"] == TLS_SECRET, where
                assert {i["key"] for i in v["secret"]["items"]} <= TLS_ITEMS, where
            assert "projected" not in v and "csi" not in v, f"{where}: {v['name']}"
        for c in all_containers(pod):
            for e in c.get("env", []):
                assert "secretKeyRef" not in e.get("valueFrom", {}), f"{where}: {e['name']}"
            for e in c.get("envFrom", []):
                assert "secretRef" not in e, where


def test_secret_file_pattern_catches_keys_and_vaults() -> None:
    for bad in ("/release/keys/acme.key", "vault.json", "/vault", "acme.key", "keys"):
        assert SECRET_FILE.search(bad), bad
    for ok in ("tls.key", "/etc/encryip/tls/tls.key", "manifest.json", "model.onnx", "monkeys"):
        assert not SECRET_FILE.search(ok), ok


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_release_is_read_only_and_public_only(rendered: Docs, target: str) -> None:
    deployment = one(rendered[target], "Deployment", "encryip")
    pod = deployment["spec"]["template"]["spec"]
    c = runtime_container(deployment)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models/release"]["readOnly"] is True
    writable = [p for p, m in mounts.items() if not m.get("readOnly")]
    assert writable == ["/tmp"], "the server writes only /tmp"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts["/models/release"]["name"])
    if "persistentVolumeClaim" in volume:
        assert volume["persistentVolumeClaim"]["readOnly"] is True
        assert not pod.get("initContainers")
    else:
        # Init container copies exactly the two public files from the release image.
        (init,) = pod["initContainers"]
        assert init["command"] == [
            "cp",
            "/release/model.onnx",
            "/release/manifest.json",
            "/models/release/",
        ]
        assert "emptyDir" in volume


def test_training_job_is_isolated_from_the_runtime(rendered: Docs) -> None:
    job = one(rendered["exporter"], "Job")
    runtime_ns = one(rendered["overlays/cpu"], "Deployment")["metadata"]["namespace"]
    assert job["metadata"]["namespace"] != runtime_ns, "vault and keys never next to the runtime"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["command"] == ["torchrun"]
    nproc = next(a for a in c["args"] if a.startswith("--nproc_per_node="))
    assert nproc.split("=")[1] == c["resources"]["limits"]["nvidia.com/gpu"]
    assert c["args"][c["args"].index("-m") + 1 : c["args"].index("-m") + 3] == [
        "exporter.cli",
        "train",
    ]
    assert not any("secret" in v for v in pod["volumes"])
    shm = next(m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert next(v for v in pod["volumes"] if v["name"] == shm["name"])["emptyDir"]["medium"] == (
        "Memory"
    )


def test_training_job_arguments_parse_with_the_exporter_cli(rendered: Docs) -> None:
    from exporter.cli import build_parser  # argparse only: no torch import

    (c,) = one(rendered["exporter"], "Job")["spec"]["template"]["spec"]["containers"]
    args = c["args"][c["args"].index("exporter.cli") + 1 :]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "train"
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    for path in (parsed.out, parsed.data_root, parsed.checkpoint):
        assert any(str(path).startswith(m + "/") for m in mounts if m != "/tmp"), path
