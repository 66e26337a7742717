"""The Kubernetes manifests validate against the API schemas (offline) and keep their promises."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


from ..dependencies import missing, require

yaml = require("yaml", "dev")

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def load_all() -> dict[str, dict]:
    docs = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def test_manifests_validate_strictly():
    tool = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")
    if not Path(tool).exists():
        missing("kubernetes-validate", "dev")
    assert MANIFESTS
    result = subprocess.run([tool, "--strict", *map(str, MANIFESTS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout + result.stderr


def test_deployment_promises():
    docs = load_all()
    spec = docs["Deployment/zeroembed"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert spec["terminationGracePeriodSeconds"] > float(env["ZEROEMBED_SHUTDOWN_GRACE_S"]) + 5
    assert env["ZEROEMBED_BIND"] == "0.0.0.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["securityContext"]["runAsNonRoot"] is True
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["zeroembed", "status"]
        timeout = float(command[command.index("--timeout") + 1])
        assert timeout < container[probe]["timeoutSeconds"]  # the command gives up before the kubelet does
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"zmq": int(env["ZEROEMBED_PORT"]), "metrics": int(env["ZEROEMBED_METRICS_PORT"])}
    annotations = docs["Deployment/zeroembed"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == env["ZEROEMBED_METRICS_PORT"]


def test_services_hpa_and_scrape_config():
    docs = load_all()
    labels = docs["Deployment/zeroembed"]["spec"]["template"]["metadata"]["labels"]
    for name in ("Service/zeroembed", "Service/zeroembed-headless"):
        service = docs[name]["spec"]
        assert service["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["ports"]} == {"zmq", "metrics"}
    assert docs["Service/zeroembed-headless"]["spec"]["clusterIP"] == "None"
    hpa = docs["HorizontalPodAutoscaler/zeroembed"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "zeroembed"}
    scrape = yaml.safe_load(docs["ConfigMap/zeroembed-prometheus-scrape"]["data"]["zeroembed-scrape.yaml"])
    assert scrape["scrape_configs"][0]["kubernetes_sd_configs"] == [{"role": "pod"}]


def test_compose_file_is_coherent():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    replicas = [s for name, s in compose["services"].items() if name.startswith("zeroembed")]
    assert len(replicas) == 2
    for service in replicas:
        assert service["build"]["context"] == ".." and service["build"]["target"] == "gpu"
        assert float(service["stop_grace_period"].rstrip("s")) > float(service["environment"]["ZEROEMBED_SHUTDOWN_GRACE_S"])
