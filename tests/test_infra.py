"""infra/: the compose stack and the Kubernetes manifests parse and agree with each other.

Docker and a cluster are not available here, so these files are checked statically:
services, images, ports, environment names, and the entrypoints they run.
"""

from __future__ import annotations

import json
import re

import yaml
from conftest import ROOT

INFRA = ROOT / "infra"
COMPOSE = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
ENV_NAMES = {
    line.split("=", 1)[0] for line in (INFRA / ".env.example").read_text().splitlines() if re.match(r"^[A-Z_]+=", line)
}
K8S = [doc for p in sorted((INFRA / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(p.read_text()) if doc]


def test_compose_has_the_stack_and_builds_one_image():
    services = COMPOSE["services"]
    assert set(services) == {
        *("postgres", "minio", "minio-init", "mlflow", "prefect-server", "worker", "serve"),
        *("dask-scheduler", "dask-worker"),
    }
    for name in ("mlflow", "prefect-server", "worker", "serve", "dask-scheduler", "dask-worker"):
        assert (
            services[name]["build"]["dockerfile"] == "infra/Dockerfile"
            and services[name]["image"] == "interestflow:latest"
        )
    for line in (INFRA / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_every_substituted_variable_is_documented_in_env_example():
    text = (INFRA / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_]+)\}", text))
    assert used and used <= ENV_NAMES, used - ENV_NAMES


def test_ports_and_urls_agree():
    services = COMPOSE["services"]
    env = dict(
        line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines() if re.match(r"^[A-Z_]+=", line)
    )
    mlflow_port = re.search(r"--port (\d+)", services["mlflow"]["command"]).group(1)
    prefect_port = re.search(r"--port (\d+)", services["prefect-server"]["command"]).group(1)
    assert env["MLFLOW_TRACKING_URI"].endswith(f"mlflow:{mlflow_port}")
    assert f"prefect-server:{prefect_port}/api" in env["PREFECT_API_URL"]
    assert services["worker"]["environment"]["PREFECT_API_URL"] == env["PREFECT_API_URL"]
    assert f"{mlflow_port}:{mlflow_port}" in services["mlflow"]["ports"]


def test_the_compose_worker_serves_the_pool_of_prefect_yaml():
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert pools == {"interestflow-local"}
    assert "--pool interestflow-local" in COMPOSE["services"]["worker"]["command"]


def test_k8s_services_point_at_container_ports_of_their_workloads():
    workloads = {d["metadata"]["name"]: d for d in K8S if d["kind"] in ("Deployment", "StatefulSet")}
    assert {"postgres", "minio", "mlflow", "prefect-server", "prefect-worker", "serve"} <= set(workloads)
    for svc in (d for d in K8S if d["kind"] == "Service"):
        target = workloads[svc["spec"]["selector"]["app"]]
        ports = {
            p["containerPort"] for c in target["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        }
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports, svc["metadata"]["name"]
    for name in ("mlflow", "prefect-server", "prefect-worker", "serve"):
        images = {c["image"] for c in workloads[name]["spec"]["template"]["spec"]["containers"]}
        assert images == {COMPOSE["services"]["mlflow"]["image"]}
    config = next(d for d in K8S if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "interestflow-config")
    secret = next(d for d in K8S if d["kind"] == "Secret")
    assert set(config["data"]) | set(secret["stringData"]) >= ENV_NAMES - {"INTERESTFLOW_HOME"}
    assert all(d["metadata"].get("namespace", "interestflow") == "interestflow" for d in K8S)


def test_dask_workers_reach_the_scheduler_and_the_worker_points_runs_at_it():
    """The Dask cluster of infra/: workers connect to the scheduler's service and port, and the
    flow runs' environment (compose worker, Kubernetes config) names that address."""
    services = COMPOSE["services"]
    port = services["dask-scheduler"]["command"].split("--port ")[1].split()[0]
    address = f"tcp://dask-scheduler:{port}"
    assert address in services["dask-worker"]["command"]
    assert services["worker"]["environment"]["INTERESTFLOW_DASK_ADDRESS"] == address
    docs = list(yaml.safe_load_all((INFRA / "k8s" / "dask.yaml").read_text()))
    worker = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "dask-worker")
    assert address in worker["spec"]["template"]["spec"]["containers"][0]["command"]
    config = next(yaml.safe_load_all((INFRA / "k8s" / "config.yaml").read_text()))
    assert config["data"]["INTERESTFLOW_DASK_ADDRESS"] == address


def test_the_kubernetes_work_pool_template_requests_gpus():
    template = json.loads((INFRA / "k8s" / "base-job-template.json").read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert template["variables"]["properties"]["gpus"]["default"] >= 1
    used = set(re.findall(r"\{\{ (\w+) \}\}", json.dumps(template["job_configuration"])))
    assert used <= set(template["variables"]["properties"]), used - set(template["variables"]["properties"])
    worker = next(d for d in K8S if d["kind"] == "Deployment" and d["metadata"]["name"] == "prefect-worker")
    assert "interestflow-k8s" in worker["spec"]["template"]["spec"]["containers"][0]["command"]


def test_the_serve_service_runs_interestflow_serve_on_the_mlflow_server():
    from flows.cli import build_parser
    from flows.nightly import nightly

    serve = COMPOSE["services"]["serve"]
    args = serve["command"].replace("${SERVE_FAMILY}", "bert").split()
    assert args[:2] == ["interestflow", "serve"]
    parsed = build_parser(nightly)[0].parse_args(args[1:])  # the command line the CLI accepts
    assert parsed.port == 5001 and f"{parsed.port}:{parsed.port}" in serve["ports"]
    assert serve["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    pod = next(d for d in K8S if d["kind"] == "Deployment" and d["metadata"]["name"] == "serve")
    container = pod["spec"]["template"]["spec"]["containers"][0]
    assert "interestflow serve" in container["args"][0] and container["readinessProbe"]["httpGet"]["path"] == "/ping"
