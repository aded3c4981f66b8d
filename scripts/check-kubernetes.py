#!/usr/bin/env python3
"""Checks deploy/kubernetes (run by tests/kubernetes.rs, so by scripts/test):

- the generated manifests are current (scripts/gen-kubernetes.py --check);
- every variant builds with `kubectl kustomize`;
- core objects validate against the Kubernetes schema (kubernetes-validate, strict);
- the PrometheusRule's rules pass `promtool check rules`;
- the ServiceMonitor selects the Service and scrapes a port it has at /metrics,
  and the Service selects the pods and targets a port they name;
- every *_FILE variable points into the mounted Secret, at a key the example has.

Prints what it checked; exits 1 naming the first thing wrong."""
import json
import os
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
K8S = os.path.join(ROOT, "deploy", "kubernetes")
VARIANTS = ["base", "ha", "prometheus-operator"]
KUBERNETES_VERSION = "1.33.0"


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def run(args, what):
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"{what}: {' '.join(args)}\n{done.stdout}{done.stderr}")
    return done.stdout


def build(variant):
    out = run(["kubectl", "kustomize", os.path.join(K8S, variant)], f"kustomize {variant}")
    return [d for d in yaml.safe_load_all(out) if d]


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        fail(f"expected one {kind}, found {len(found)}")
    return found[0]


def validate_core(variant, docs):
    core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(yaml.safe_dump_all(core))
    try:
        out = run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, f.name],
            f"kubernetes-validate {variant}",
        )
    finally:
        os.unlink(f.name)
    print(f"{variant}: {len(core)} core objects valid for Kubernetes {KUBERNETES_VERSION}")
    return out


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_workload(variant, docs):
    service = one(docs, "Service")
    workload = next(d for d in docs if d["kind"] in ("StatefulSet", "Deployment"))
    pod = workload["spec"]["template"]
    if not matches(service["spec"]["selector"], pod["metadata"]["labels"]):
        fail(f"{variant}: the Service does not select the pods")
    container = pod["spec"]["containers"][0]
    named = {p["name"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        if port["targetPort"] not in named:
            fail(f"{variant}: Service targets port {port['targetPort']!r}, the pod names {sorted(named)}")
    security = container["securityContext"]
    if not (security.get("readOnlyRootFilesystem") and pod["spec"]["securityContext"].get("runAsNonRoot")):
        fail(f"{variant}: the container must run as non-root on a read-only root filesystem")
    paths = {p["httpGet"]["path"] for p in (container["readinessProbe"], container["livenessProbe"])}
    if paths != {"/readyz", "/healthz"}:
        fail(f"{variant}: probes must be /readyz and /healthz, found {sorted(paths)}")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secret_volume = next(v for v in pod["spec"]["volumes"] if "secret" in v)
    secret_dir = mounts[secret_volume["name"]]
    with open(os.path.join(K8S, "secret.example.yaml"), encoding="utf-8") as f:
        example = yaml.safe_load(f)
    keys = set(example["stringData"])
    for env in container["env"]:
        if env["name"].endswith("_FILE"):
            directory, key = os.path.split(env["value"])
            if directory != secret_dir or key not in keys:
                fail(f"{variant}: {env['name']}={env['value']} is not a key of the mounted Secret ({sorted(keys)})")
        elif any(word in env["name"] for word in ("TOKEN", "SECRET", "API_KEY", "STORE__URL")) and variant == "ha":
            fail(f"{variant}: {env['name']} is a secret given as a value; use {env['name']}_FILE")
    print(f"{variant}: Service → pods, probes, non-root read-only, secrets as files: ok")
    return service


def check_monitoring(docs, service):
    monitor = one(docs, "ServiceMonitor")
    if not matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]):
        fail("the ServiceMonitor does not select the Service")
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        if endpoint["port"] not in ports:
            fail(f"the ServiceMonitor scrapes port {endpoint['port']!r}; the Service has {sorted(ports)}")
        if endpoint.get("path", "/metrics") != "/metrics":
            fail(f"the ServiceMonitor scrapes {endpoint['path']}, not /metrics")
    rule = one(docs, "PrometheusRule")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    try:
        out = run(["promtool", "check", "rules", f.name], "promtool check rules")
    finally:
        os.unlink(f.name)
    print("prometheus-operator: ServiceMonitor → Service port and /metrics: ok; " + out.strip().splitlines()[-1])
    boards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    for board in boards:
        for name, text in board["data"].items():
            json.loads(text)
    print(f"prometheus-operator: {len(boards)} dashboards for Grafana's sidecar")


def main():
    run([sys.executable, os.path.join(ROOT, "scripts", "gen-kubernetes.py"), "--check"], "generated manifests")
    print("generated manifests are current")
    built = {v: build(v) for v in VARIANTS}
    services = {}
    for variant in ("base", "ha"):
        validate_core(variant, built[variant])
        services[variant] = check_workload(variant, built[variant])
    validate_core("prometheus-operator", built["prometheus-operator"])
    check_monitoring(built["prometheus-operator"], services["base"])
    print("all Kubernetes checks passed")


if __name__ == "__main__":
    main()
