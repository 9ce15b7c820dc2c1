#!/usr/bin/env python3
"""Cross-checks of the deployment files that no schema knows (run by scripts/deploy-lint.sh).

Facts about the server are read from its sources, not repeated here: the CSP_* variables it reads
(server/src/config.rs), its GET routes (server/src/http/mod.rs), its metric names
(server/src/core/metrics.rs) and its default shutdown grace. Then: the Dockerfiles' ports, user and
environment; the Kubernetes manifests' ports, probes, labels, grace periods and references; the
compose file, Prometheus' scrape targets and Grafana's provisioning and dashboard queries.
Needs PyYAML (scripts/deploy-lint.sh installs it with kubernetes-validate). Exit 1 on any finding.
"""

import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
# What csp-client (the image's health check) reads; every other CSP_* variable must be the server's.
CLIENT_ENV = {"CSP_URL"}
# Manifests outside the kustomization, applied on their own (they need GPU nodes or KServe).
STANDALONE = {"deployment-gpu.yaml", "inferenceservice.yaml"}
# Metrics the dashboard must show (the issue: throughput, latency percentiles, batch sizes, queue depth).
DASHBOARD_NEEDS = {"csp_requests_total", "csp_request_seconds", "csp_batch_size", "csp_queue_depth"}

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def rel(path):
    return path.relative_to(REPO)


# --- the server, from its sources -------------------------------------------------------------


def server_facts():
    config = (REPO / "server/src/config.rs").read_text()
    env = set(re.findall(r'env = "(CSP_[A-Z0-9_]+)"', config))
    grace = re.search(r'env = "CSP_SHUTDOWN_GRACE", default_value_t = ([0-9.]+)', config)
    routes_src = (REPO / "server/src/http/mod.rs").read_text()
    get_routes = set(re.findall(r'route\(Get, "([^"]+)"', routes_src))
    metrics_src = (REPO / "server/src/core/metrics.rs").read_text()
    metrics = set(re.findall(r'"(csp_[a-z_]+)"', metrics_src))
    if len(env) < 10 or not grace or "/v2/health/ready" not in get_routes or "csp_queue_depth" not in metrics:
        sys.exit("check-manifests: the server's sources no longer look as expected; update this script")
    return env, float(grace.group(1)), get_routes, metrics


SERVER_ENV, DEFAULT_GRACE, GET_ROUTES, METRICS = server_facts()


def check_env_names(where, names):
    for name in names:
        if name.startswith("CSP_") and name not in SERVER_ENV and name not in CLIENT_ENV:
            problem(where, f"{name} is not a variable csp-server reads (server/src/config.rs)")


def port_of(addr):
    match = re.fullmatch(r"[0-9.]+:([0-9]+)", addr or "")
    return int(match.group(1)) if match else None


# --- Dockerfiles --------------------------------------------------------------------------------


def dockerfile(path):
    """The final stage's instructions (continuations joined): ENV, EXPOSE, USER, ENTRYPOINT, HEALTHCHECK."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    final = [line for line in lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]]
    image = {"env": {}, "expose": set(), "user": None, "entrypoint": None, "healthcheck": None}
    for line in final:
        op, _, rest = line.partition(" ")
        if op == "ENV":
            image["env"].update(dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", rest)))
        elif op == "EXPOSE":
            image["expose"].update(int(p.split("/")[0]) for p in rest.split())
        elif op == "USER":
            image["user"] = rest
        elif op == "ENTRYPOINT":
            image["entrypoint"] = json.loads(rest)
        elif op == "HEALTHCHECK":
            image["healthcheck"] = json.loads(rest[rest.index("CMD") + 3 :])
    return image


def check_image(path, expect_device):
    where = rel(path)
    image = dockerfile(path)
    env = image["env"]
    check_env_names(where, env)
    http, grpc = port_of(env.get("CSP_HTTP_ADDR")), port_of(env.get("CSP_GRPC_ADDR"))
    if image["expose"] != {http, grpc}:
        problem(where, f"EXPOSE {sorted(image['expose'])} is not the HTTP and gRPC ports {http}, {grpc} of ENV")
    if port_of(env.get("CSP_URL", "").removeprefix("http://")) != http:
        problem(where, "the health check's CSP_URL is not the HTTP port")
    if image["entrypoint"] != ["csp-server"]:
        problem(where, f"ENTRYPOINT {image['entrypoint']}: expected exec form [\"csp-server\"]")
    if not image["healthcheck"] or image["healthcheck"][0] != "csp-client" or "health" not in image["healthcheck"]:
        problem(where, "HEALTHCHECK must run `csp-client ... health` in exec form")
    uid = (image["user"] or "").split(":")[0]
    if not uid.isdigit() or uid == "0":
        problem(where, f"USER {image['user']}: expected a numeric non-root uid")
    if env.get("CSP_DEVICE", "cpu").startswith("cuda") != expect_device:
        problem(where, f"CSP_DEVICE {env.get('CSP_DEVICE')}: expected a {'cuda' if expect_device else 'cpu'} device")
    if not env.get("CSP_DEFAULT_CONFIG", "").endswith("/models/default/models.toml"):
        problem(where, "CSP_DEFAULT_CONFIG must point at the bundled models.toml (the compiled-in default is a build path)")
    return {"http": http, "grpc": grpc, "uid": int(uid) if uid.isdigit() else None, "env": env}


# The image names the manifests use, and the Dockerfile each is built from.
IMAGE_FILES = {"cspserve:cpu": "Dockerfile", "cspserve:cuda": "Dockerfile.cuda"}
IMAGES = {name: check_image(DOCKER / file, expect_device=name.endswith("cuda")) for name, file in IMAGE_FILES.items()}


# --- Kubernetes ----------------------------------------------------------------------------------


def load_k8s():
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_env(container, configmaps):
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        name = source.get("configMapRef", {}).get("name")
        if name not in configmaps:
            problem(name, "envFrom names a ConfigMap that is not in docker/k8s")
            continue
        env = {**configmaps[name], **env}
    return env


def check_probe(where, container, probe, path):
    spec = container.get(probe)
    if not spec:
        problem(where, f"no {probe}")
        return
    get = spec.get("httpGet", {})
    if get.get("path") != path or path not in GET_ROUTES:
        problem(where, f"{probe} path {get.get('path')}: expected {path}, a route of the server")
    port_names = {p.get("name") for p in container.get("ports", [])}
    port_numbers = {p.get("containerPort") for p in container.get("ports", [])}
    if get.get("port") not in port_names | port_numbers:
        problem(where, f"{probe} port {get.get('port')} is not a port of the container")


def check_deployment(where, deployment, configmaps):
    spec = deployment["spec"]
    pod = spec["template"]
    labels = pod["metadata"].get("labels", {})
    if not selects(spec["selector"].get("matchLabels"), labels):
        problem(where, "the selector does not match the pod template's labels")
    pod_spec = pod["spec"]
    (container,) = pod_spec["containers"]
    image = IMAGES.get(container["image"])
    if image is None:
        problem(where, f"image {container['image']}: expected one of {sorted(IMAGES)} (kustomize renames it)")
        return labels, {}
    env = {**image["env"], **container_env(container, configmaps)}
    check_env_names(where, env)
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports != {"http": port_of(env.get("CSP_HTTP_ADDR")), "grpc": port_of(env.get("CSP_GRPC_ADDR"))}:
        problem(where, f"container ports {ports} are not the server's HTTP and gRPC addresses")
    check_probe(where, container, "readinessProbe", "/v2/health/ready")
    check_probe(where, container, "startupProbe", "/v2/health/ready")
    check_probe(where, container, "livenessProbe", "/v2/health/live")
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    sleep = pre_stop.get("sleep", {}).get("seconds")
    if sleep is None and len(command) == 2 and command[0] == "sleep" and command[1].isdigit():
        sleep = int(command[1])
    if not sleep:
        problem(where, "no preStop sleep: the pod would drain before the Service stops sending it requests")
    grace = float(env.get("CSP_SHUTDOWN_GRACE") or DEFAULT_GRACE)
    termination = pod_spec.get("terminationGracePeriodSeconds", 30)
    if termination <= (sleep or 0) + grace:
        problem(where, f"terminationGracePeriodSeconds {termination} <= preStop {sleep} s + shutdown grace {grace} s")
    security = pod_spec.get("securityContext", {})
    if not security.get("runAsNonRoot") or security.get("runAsUser") != image["uid"]:
        problem(where, f"securityContext must run as non-root with the image's uid {image['uid']}")
    resources = container.get("resources", {})
    if not {"cpu", "memory"} <= set(resources.get("requests", {})):
        problem(where, "resources.requests needs cpu and memory")
    gpu = env.get("CSP_DEVICE", "cpu").startswith("cuda")
    if gpu != ("nvidia.com/gpu" in resources.get("limits", {})) or gpu != (container["image"] == "cspserve:cuda"):
        problem(where, "a cuda device, a nvidia.com/gpu limit and the cuda image go together")
    return labels, ports


def check_k8s():
    docs = load_k8s()
    kustomization = docs.pop("kustomization.yaml")[0]
    resources = kustomization.get("resources", [])
    missing = [r for r in resources if r not in docs]
    if missing:
        problem("docker/k8s/kustomization.yaml", f"resources not in docker/k8s: {missing}")
    unaccounted = set(docs) - set(resources) - STANDALONE
    if unaccounted:
        problem("docker/k8s", f"manifests neither in the kustomization nor standalone: {sorted(unaccounted)}")
    by_kind = {}
    for name, file_docs in docs.items():
        for doc in file_docs:
            by_kind.setdefault(doc["kind"], []).append((name, doc))
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for _, d in by_kind.get("ConfigMap", [])}
    for name, data in configmaps.items():
        check_env_names(f"ConfigMap {name}", data)
    pods = {}
    for file, deployment in by_kind.get("Deployment", []):
        pods[deployment["metadata"]["name"]] = check_deployment(f"docker/k8s/{file}", deployment, configmaps)
    for file, service in by_kind.get("Service", []):
        where = f"docker/k8s/{file} ({service['metadata']['name']})"
        selected = [ports for labels, ports in pods.values() if selects(service["spec"].get("selector"), labels)]
        if not selected:
            problem(where, "the selector matches no Deployment's pods")
        for port in service["spec"]["ports"]:
            for ports in selected:
                if port.get("targetPort") not in ports and port.get("targetPort") not in ports.values():
                    problem(where, f"targetPort {port.get('targetPort')} is not a container port of every selected pod")
            if port["name"] == "grpc" and port.get("appProtocol") != "grpc":
                problem(where, "the grpc port needs appProtocol: grpc")
    for file, hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]
        if target.get("kind") != "Deployment" or target.get("name") not in pods:
            problem(f"docker/k8s/{file}", f"scaleTargetRef {target} is not a Deployment here")
    for file, pdb in by_kind.get("PodDisruptionBudget", []):
        if not any(selects(pdb["spec"]["selector"].get("matchLabels"), labels) for labels, _ in pods.values()):
            problem(f"docker/k8s/{file}", "the selector matches no Deployment's pods")
    for file, isvc in by_kind.get("InferenceService", []):
        check_inference_service(f"docker/k8s/{file}", isvc)


def check_inference_service(where, isvc):
    if isvc.get("apiVersion") != "serving.kserve.io/v1beta1":
        problem(where, f"apiVersion {isvc.get('apiVersion')}: expected serving.kserve.io/v1beta1")
    (container,) = isvc["spec"]["predictor"]["containers"]
    image = IMAGES.get(container["image"])
    if image is None:
        problem(where, f"image {container['image']} is not one of {sorted(IMAGES)}")
        return
    env = {**image["env"], **container_env(container, {})}
    check_env_names(where, env)
    (port,) = container["ports"]
    if port["containerPort"] != port_of(env.get("CSP_HTTP_ADDR")):
        problem(where, f"containerPort {port['containerPort']} is not the server's HTTP port")
    check_probe(where, container, "readinessProbe", "/v2/health/ready")
    check_probe(where, container, "livenessProbe", "/v2/health/live")


# --- compose, Prometheus, Grafana ----------------------------------------------------------------


def check_compose():
    where = "docker/compose.yaml"
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    http_ports = {}
    for name, service in services.items():
        build = service.get("build")
        if build:
            dockerfile_path = (DOCKER / build["context"] / build["dockerfile"]).resolve()
            if not dockerfile_path.is_file():
                problem(where, f"{name}: no Dockerfile at {build['dockerfile']}")
            image = IMAGES.get(service.get("image"))
            if image is None or dockerfile_path.name != IMAGE_FILES[service["image"]]:
                problem(where, f"{name}: image {service.get('image')} does not match its Dockerfile")
                continue
            env = {**image["env"], **service.get("environment", {})}
            check_env_names(f"{where} {name}", env)
            inside = {int(p.split(":")[-1]) for p in service.get("ports", [])}
            if inside != {image["http"], image["grpc"]}:
                problem(where, f"{name}: published container ports {sorted(inside)} are not {image['http']}, {image['grpc']}")
            grace = float(env.get("CSP_SHUTDOWN_GRACE") or DEFAULT_GRACE)
            stop = service.get("stop_grace_period", "10s")
            if not stop.endswith("s") or float(stop[:-1]) <= grace:
                problem(where, f"{name}: stop_grace_period {stop} is not longer than the shutdown grace {grace} s")
            http_ports[name] = image["http"]
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (DOCKER / source).exists():
                problem(where, f"{name}: mounts {source}, which does not exist")
    check_prometheus(http_ports)
    check_grafana(services["grafana"])


def check_prometheus(http_ports):
    where = "docker/prometheus/prometheus.yml"
    config = yaml.safe_load((DOCKER / "prometheus/prometheus.yml").read_text())
    targets = []
    for job in config["scrape_configs"]:
        if job.get("metrics_path", "/metrics") not in GET_ROUTES:
            problem(where, f"job {job['job_name']}: metrics_path is not a route of the server")
        for static in job.get("static_configs", []):
            targets.extend(static["targets"])
    scraped = {}
    for target in targets:
        host, _, port = target.partition(":")
        scraped[host] = int(port)
    if scraped != http_ports:
        problem(where, f"targets {scraped} are not the compose servers' HTTP ports {http_ports}")


def check_grafana(service):
    where = "docker/grafana"
    mounts = dict(v.split(":")[:2] for v in service["volumes"] if v.startswith("."))
    datasources = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    providers = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/cspserve.yaml").read_text())
    for provider in providers["providers"]:
        if provider["options"]["path"] not in mounts.values():
            problem(where, f"dashboard provider path {provider['options']['path']} is not a mount of the grafana service")
    dashboards = sorted((DOCKER / "grafana/dashboards").glob("*.json"))
    if not dashboards:
        problem(where, "no dashboard JSON")
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        used = set()
        panels = dashboard.get("panels", [])
        if len({p["id"] for p in panels}) != len(panels):
            problem(rel(path), "panel ids are not unique")
        for panel in panels:
            for source in [panel.get("datasource", {})] + [t.get("datasource", {}) for t in panel.get("targets", [])]:
                if source.get("uid") not in uids:
                    problem(rel(path), f"panel {panel['title']!r}: datasource uid {source.get('uid')} is not provisioned")
            for target in panel.get("targets", []):
                for metric in re.findall(r"\b(csp_[a-z_]+)", target["expr"]):
                    base = re.sub(r"_(bucket|sum|count)$", "", metric)
                    if base not in METRICS:
                        problem(rel(path), f"panel {panel['title']!r}: {metric} is not a metric of the server")
                    used.add(base)
        if not DASHBOARD_NEEDS <= used:
            problem(rel(path), f"shows none of {sorted(DASHBOARD_NEEDS - used)}")


check_k8s()
check_compose()
if problems:
    print("check-manifests: " + "\ncheck-manifests: ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"check-manifests: ok (server env {len(SERVER_ENV)} variables, {len(GET_ROUTES)} GET routes, {len(METRICS)} metrics)")
