"""The deployment files: the Grafana dashboard queries only metrics a live replica exposes,
the Kubernetes manifests validate offline against a current Kubernetes schema, the
PrometheusRule is the alert file, and compose refers only to files that exist.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
KUBERNETES_VERSION = "1.37.0"
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}  # prometheus-operator's, not in the schemas


def panel_metric_names(dashboard):
    names = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b(sluice_[a-z0-9_]+)", target.get("expr", "")):
                names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


def test_every_dashboard_metric_is_exposed(gateway):
    from openai import OpenAI
    client = OpenAI(base_url=gateway["base_url"], api_key=gateway["key"], max_retries=0)
    client.chat.completions.create(model="sdk-model", messages=[{"role": "user", "content": "hi"}])
    for _ in client.chat.completions.create(model="sdk-model", messages=[{"role": "user", "content": "hi"}], stream=True):
        pass  # a stream, so time to first token has a series
    exposed = set(re.findall(r"^# TYPE (\S+)", urllib.request.urlopen(
        f"{gateway['admin_url']}/metrics", timeout=5).read().decode(), re.MULTILINE))
    with open(os.path.join(DEPLOY, "grafana", "sluice.json")) as file:
        wanted = panel_metric_names(json.load(file))
    assert wanted, "the dashboard queries no sluice metric"
    assert wanted <= exposed, f"panels query metrics /metrics does not have: {sorted(wanted - exposed)}"


def test_ledger_panels_query_the_real_schema():
    with open(os.path.join(DEPLOY, "grafana", "sluice.json")) as file:
        queries = [t["rawSql"] for p in json.load(file)["panels"] for t in p["targets"] if "rawSql" in t]
    assert queries, "no ledger panel"
    for query in queries:
        ran = subprocess.run(["psql", os.environ["SLUICE_TEST_DATABASE_URL"], "-qAc", query], capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr


def manifests():
    for directory in (os.path.join(K8S, "base"), os.path.join(K8S, "overlays", "example")):
        for name in sorted(os.listdir(directory)):
            if name.endswith(".yaml") and name != "kustomization.yaml":
                yield os.path.join(directory, name)


def test_kubernetes_manifests_validate():
    validator = shutil.which("kubernetes-validate") or os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    if not os.path.exists(validator):
        pytest.skip("kubernetes-validate (PyPI) is not installed")
    builtin, custom = [], []
    for path in manifests():
        with open(path) as file:
            document = yaml.safe_load(file)
        if "patch" in os.path.basename(path) or "resources" in os.path.basename(path):
            continue  # a partial object: checked by kustomize when applied
        (custom if document["kind"] in CUSTOM_KINDS else builtin).append(path)
    checked = subprocess.run([validator, "--strict", "-k", KUBERNETES_VERSION, *builtin], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for path in custom:
        with open(path) as file:
            document = yaml.safe_load(file)
        assert document["apiVersion"] == "monitoring.coreos.com/v1" and document["spec"], path


def test_kustomizations_refer_to_files_that_exist():
    for directory in (os.path.join(K8S, "base"), os.path.join(K8S, "overlays", "example")):
        with open(os.path.join(directory, "kustomization.yaml")) as file:
            kustomization = yaml.safe_load(file)
        for entry in kustomization.get("resources", []) + [p["path"] for p in kustomization.get("patches", [])]:
            assert os.path.exists(os.path.join(directory, entry)), f"{directory}: {entry}"
    listed = set(yaml.safe_load(open(os.path.join(K8S, "base", "kustomization.yaml")))["resources"])
    present = {name for name in os.listdir(os.path.join(K8S, "base")) if name != "kustomization.yaml"}
    assert listed == present, f"base files not in the kustomization: {present - listed}"


def test_prometheus_rule_is_the_alert_file():
    checked = subprocess.run(["bash", os.path.join(K8S, "prometheusrule.sh"), "--check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    with open(os.path.join(K8S, "base", "prometheusrule.yaml")) as file:
        rule = yaml.safe_load(file)
    with open(os.path.join(DEPLOY, "prometheus-alerts.yaml")) as file:
        assert rule["spec"] == yaml.safe_load(file)


def test_compose_mounts_files_that_exist():
    with open(os.path.join(DEPLOY, "compose.yaml")) as file:
        compose = yaml.safe_load(file)
    assert {"redis", "postgres", "migrate", "sluice-1", "sluice-2", "sluice-3", "haproxy", "mock-upstream",
            "prometheus", "grafana"} <= set(compose["services"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert os.path.exists(os.path.join(DEPLOY, source)), f"{name}: {source}"
    assert not os.path.exists(os.path.join(DEPLOY, "sluice.env")) or \
        subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", "deploy/sluice.env"]).returncode == 0
