"""deploy/: the compose file against the compose-spec JSON schema (as vendored by
check-jsonschema), the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate,
strict: unknown fields are errors), the NATS Helm chart's values against the chart's keys, and
what no schema sees: selectors match labels, ports and probes name real ports, volumes and
secrets referenced exist, no secret is written in a file, and every ``cityedge`` option the
files pass is one the command has. No Docker engine or cluster runs here; these checks run
offline."""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml

from cityedge.cli import app as cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes these manifests are meant for
SECRETISH = re.compile(r"(?i)pass(word)?|secret|token|private|credential")

# Value keys of the NATS chart (nats/nats 2.14.2) under what deploy/k8s/nats-values.yaml sets;
# below "merge", "patch", "resources" and "topologySpreadConstraints" the values are free-form
# (NATS configuration, JSON patches, Kubernetes objects).
NATS_CHART_KEYS = frozenset(
    [
        "config",
        "config.cluster",
        "config.cluster.enabled",
        "config.cluster.port",
        "config.cluster.replicas",
        "config.cluster.noAdvertise",
        "config.cluster.tls",
        "config.cluster.tls.enabled",
        "config.cluster.tls.secretName",
        "config.cluster.merge",
        "config.cluster.patch",
        "config.jetstream",
        "config.jetstream.enabled",
        "config.jetstream.fileStore",
        "config.jetstream.fileStore.enabled",
        "config.jetstream.fileStore.dir",
        "config.jetstream.fileStore.pvc",
        "config.jetstream.fileStore.pvc.enabled",
        "config.jetstream.fileStore.pvc.size",
        "config.jetstream.fileStore.pvc.storageClassName",
        "config.jetstream.fileStore.maxSize",
        "config.jetstream.memoryStore",
        "config.jetstream.memoryStore.enabled",
        "config.jetstream.merge",
        "config.mqtt",
        "config.mqtt.enabled",
        "config.mqtt.port",
        "config.mqtt.tls",
        "config.mqtt.tls.enabled",
        "config.mqtt.tls.secretName",
        "config.mqtt.tls.dir",
        "config.mqtt.tls.cert",
        "config.mqtt.tls.key",
        "config.mqtt.tls.merge",
        "config.mqtt.tls.patch",
        "config.mqtt.merge",
        "config.mqtt.patch",
        "config.monitor",
        "config.monitor.enabled",
        "config.monitor.port",
        "config.merge",
        "config.patch",
        "container",
        "container.image",
        "container.image.repository",
        "container.image.tag",
        "container.image.pullPolicy",
        "container.image.registry",
        "container.image.digest",
        "container.env",
        "container.merge",
        "container.patch",
        "container.resources",
        "service",
        "service.ports",
        "service.ports.nats",
        "service.ports.nats.enabled",
        "service.ports.mqtt",
        "service.ports.mqtt.enabled",
        "service.ports.monitor",
        "service.ports.monitor.enabled",
        "podTemplate",
        "podTemplate.configChecksumAnnotation",
        "podTemplate.topologySpreadConstraints",
        "podTemplate.merge",
        "podTemplate.patch",
        "podDisruptionBudget",
        "podDisruptionBudget.enabled",
    ]
)
FREE_FORM = frozenset({"merge", "patch", "resources", "topologySpreadConstraints"})


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def compose() -> dict[str, Any]:
    (doc,) = load_all(DEPLOY / "compose.yaml")
    return doc


def compose_schema() -> dict[str, Any]:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text(encoding="utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name in ("nats-values.yaml", "kustomization.yaml"):
            continue
        for doc in load_all(path):
            yield path.name, doc


def cityedge_options(command: str) -> set[str]:
    """The long options of ``cityedge <command>`` (from the CLI itself)."""
    group: Any = typer.main.get_command(cli)
    return {o for p in group.commands[command].params for o in p.opts if o.startswith("--")}


def options_in(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


# -- every file parses ---------------------------------------------------------------------------


def test_every_yaml_file_in_deploy_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        assert load_all(path), path


# -- compose -----------------------------------------------------------------------------------


def test_the_compose_file_is_valid_compose_spec() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("services", "postgres", "healthcheck", "interval"), 5),  # a duration is a string
        (("services", "postgres", "restart"), ["always"]),
        (("services", "postgres", "imagee"), "postgres:15"),
        (("services", "ingest-1", "ports"), "8480:8480"),
        (("volumes", "pgdata"), "not a mapping"),
    ],
)
def test_the_schema_check_catches_a_broken_compose_file(where: tuple[str, ...], value: Any) -> None:
    doc = copy.deepcopy(compose())
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    assert schema_errors(doc), where


def test_compose_services_volumes_secrets_and_health_fit_together() -> None:
    doc = compose()
    services: dict[str, dict[str, Any]] = doc["services"]
    for name, svc in services.items():
        assert svc.get("image"), f"{name}: no image"
        assert "healthcheck" in svc, f"{name}: no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on a missing service {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: bind mount {source} missing"
            else:
                assert source in (doc.get("volumes") or {}), f"{name}: volume {source} undeclared"
        for secret in svc.get("secrets", []):
            assert secret in doc["secrets"], f"{name}: secret {secret} undeclared"
        for key, value in (svc.get("environment") or {}).items():
            if SECRETISH.search(key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), key
        for port in svc.get("ports", []):
            host, container = (int(p) for p in port.split(":"))
            assert 0 < host < 65536 and 0 < container < 65536
    profiles = {p for svc in services.values() for p in svc.get("profiles", [])}
    assert profiles == {"mosquitto", "nats"}  # the two brokers are alternatives
    for profile in profiles:  # a service without profiles runs with either
        running = [s for s in services.values() if profile in s.get("profiles", [profile])]
        published = [p.split(":")[0] for s in running for p in s.get("ports", [])]
        assert len(published) == len(set(published)), f"{profile}: one host port twice"
    for secret in doc["secrets"].values():
        assert secret["file"].startswith("./secrets/"), "secrets live in deploy/secrets/"
    gitignore = (DEPLOY / ".gitignore").read_text()
    assert "secrets/" in gitignore.splitlines()


def test_compose_runs_a_three_node_nats_cluster_with_mqtt_on_every_node() -> None:
    services = compose()["services"]
    nodes = sorted(n for n, s in services.items() if s.get("image", "").startswith("nats:"))
    assert nodes == ["nats-1", "nats-2", "nats-3"]
    names = {services[n]["environment"]["NATS_SERVER_NAME"] for n in nodes}
    assert names == set(nodes)  # JetStream needs a unique server name per node
    conf = (DEPLOY / "nats" / "nats.conf").read_text()
    assert "server_name: $NATS_SERVER_NAME" in conf
    assert re.search(r"jetstream\s*\{[^}]*store_dir", conf)
    assert re.search(r"mqtt\s*\{[^}]*listen: 0\.0\.0\.0:1883", conf)
    routes = set(re.findall(r"nats-route://([\w-]+):6222", conf))
    assert routes == set(nodes)
    for n in nodes:
        assert services[n]["profiles"] == ["nats"]
        assert any(p.endswith(":1883") for p in services[n]["ports"])
        assert any(v.startswith("./nats/nats.conf:") for v in services[n]["volumes"])


def test_compose_ingest_workers_use_real_options_and_serve_the_page_with_tls() -> None:
    services = compose()["services"]
    known = cityedge_options("ingest")
    workers = [
        n for n, s in services.items() if "cityedge ingest" in " ".join(s.get("command", []))
    ]
    assert workers == ["ingest-1", "ingest-2"]
    for name in workers:
        script = services[name]["command"][0].replace("$$", "$")
        words = shlex.split(script.split("exec ", 1)[1])
        assert words[:2] == ["cityedge", "ingest"]
        used = options_in(words)
        assert used <= known, used - known
        assert {"--operator-tls-cert", "--operator-tls-key", "--operator-accounts"} <= used
        assert "/run/secrets/pg_password" in script and "PGPASSWORD" in script
        assert "8480" in " ".join(services[name]["healthcheck"]["test"])
        assert {"WORKER", "CITYEDGE_BROKER"} <= set(services[name]["environment"])
    assert services["ingest-1"]["ports"] == ["8480:8480"]


# -- Kubernetes ----------------------------------------------------------------------------------


def test_every_manifest_is_valid_for_kubernetes_strictly() -> None:
    kinds = []
    for name, doc in manifests():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name} {doc.get('kind')}: {err.message} at {list(err.path)}")
        kinds.append(doc["kind"])
    assert sorted(kinds) == [
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Service",
        "Service",
        "StatefulSet",
    ]


def test_the_strict_check_catches_a_misspelt_field() -> None:
    deployment = next(d for _, d in manifests() if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def workloads() -> list[dict[str, Any]]:
    return [d for _, d in manifests() if d["kind"] in ("Deployment", "StatefulSet")]


def test_selectors_match_labels_and_ports_are_the_containers() -> None:
    for w in workloads():
        labels = w["spec"]["template"]["metadata"]["labels"]
        selector = w["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), w["metadata"]["name"]
        ports = {
            p["name"]: p["containerPort"]
            for c in w["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for c in w["spec"]["template"]["spec"]["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = c.get(probe, {}).get("httpGet")
                if get is not None:
                    assert get["port"] in ports or get["port"] in ports.values(), (c["name"], probe)
        mounts = {
            m["name"]
            for c in w["spec"]["template"]["spec"]["containers"]
            for m in c.get("volumeMounts", [])
        }
        volumes = {v["name"] for v in w["spec"]["template"]["spec"].get("volumes", [])}
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        assert mounts <= volumes | claims, mounts - volumes - claims
    services = [d for _, d in manifests() if d["kind"] == "Service"]
    for s in services:
        chosen = [
            w
            for w in workloads()
            if s["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert chosen, f"service {s['metadata']['name']} selects no pods"
        for port in s["spec"]["ports"]:
            names = {
                p["name"]
                for w in chosen
                for c in w["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            assert port["targetPort"] in names, (s["metadata"]["name"], port)
    pdb = next(d for _, d in manifests() if d["kind"] == "PodDisruptionBudget")
    assert any(
        pdb["spec"]["selector"]["matchLabels"].items()
        <= w["spec"]["selector"]["matchLabels"].items()
        for w in workloads()
    )


def test_no_secret_is_written_in_a_manifest_only_referenced() -> None:
    referenced: set[str] = set()
    for name, doc in manifests():
        assert doc["kind"] != "Secret", f"{name} defines a Secret: make it on the cluster"
        for w in [doc] if doc["kind"] in ("Deployment", "StatefulSet") else []:
            spec = w["spec"]["template"]["spec"]
            for c in spec["containers"]:
                for env in c.get("env", []):
                    if SECRETISH.search(env["name"]):
                        assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
                        referenced.add(env["valueFrom"]["secretKeyRef"]["name"])
            referenced |= {
                v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v
            }
    assert referenced == {
        "cityedge-postgres",
        "cityedge-brain-mqtt",
        "cityedge-operator-tls",
        "cityedge-operator-accounts",
    }
    readme = (DEPLOY / "README.md").read_text()
    for secret in referenced:
        assert f"secret generic {secret}" in readme or f"secret tls {secret}" in readme, secret


def test_the_ingest_deployment_runs_real_options_with_replicas_and_probes() -> None:
    (deployment,) = [w for w in workloads() if w["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == "ingest"
    used = options_in(c["args"])
    assert used <= cityedge_options("ingest"), used - cityedge_options("ingest")
    assert {"--operator-tls-cert", "--operator-tls-key", "--operator-listen"} <= used
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert (
            c[probe]["httpGet"]["path"] == "/healthz" and c[probe]["httpGet"]["scheme"] == "HTTPS"
        )
    listen = next(a for a in c["args"] if a.startswith("--operator-listen="))
    assert listen.endswith(f":{c['ports'][0]['containerPort']}")


def test_kustomization_lists_the_manifests() -> None:
    (kust,) = load_all(DEPLOY / "k8s" / "kustomization.yaml")
    listed = set(kust["resources"])
    assert listed == {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {
        "kustomization.yaml",
        "nats-values.yaml",
    }


# -- the NATS Helm chart's values ----------------------------------------------------------------


def value_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        path = f"{prefix}{key}"
        yield path
        if key not in FREE_FORM:
            yield from value_paths(value, path + ".")


def test_nats_values_use_only_the_charts_keys_for_3_nodes_jetstream_and_mqtt() -> None:
    (values,) = load_all(DEPLOY / "k8s" / "nats-values.yaml")
    unknown = sorted(set(value_paths(values)) - NATS_CHART_KEYS)
    assert unknown == [], f"not keys of the nats chart: {unknown}"
    cfg = values["config"]
    assert cfg["cluster"]["enabled"] is True and cfg["cluster"]["replicas"] == 3
    assert cfg["jetstream"]["enabled"] is True
    assert cfg["jetstream"]["fileStore"]["enabled"] is True
    assert cfg["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    assert cfg["mqtt"]["enabled"] is True and cfg["mqtt"]["tls"]["enabled"] is True
    assert cfg["mqtt"]["tls"]["merge"]["verify_and_map"] is True
    assert values["service"]["ports"]["mqtt"]["enabled"] is True
    # the volume the auth include needs is added by the patches
    patches = values["container"]["patch"] + values["podTemplate"]["patch"]
    assert {p["value"]["name"] for p in patches} == {"nats-auth"}
    assert cfg["merge"]["$include"].endswith("nats-auth/auth.conf")


def test_value_paths_catch_an_old_chart_key() -> None:
    old = {"config": {"jetstream": {"fileStorage": {"enabled": True}}}}  # chart 0.x spelling
    assert set(value_paths(old)) - NATS_CHART_KEYS == {
        "config.jetstream.fileStorage",
        "config.jetstream.fileStorage.enabled",
    }
