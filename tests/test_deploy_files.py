"""The deployment files (deploy/): structure and consistency with the code, without running containers.

Docker need not run here: these tests load compose.yaml and the Kubernetes set as YAML and check what
would otherwise fail only on a real start — a dependency on a missing service, a misspelt ``PANTAU_*``
setting, workers and topics disagreeing on the partition count, a command the ``pantau`` CLI refuses,
a mounted file missing. ``docker compose config`` and ``kubectl kustomize`` run too where installed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the deploy files (pip install pyyaml)")

from pantau.cli import build_parser  # noqa: E402
from pantau.stream.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
TOPICS_SH = DEPLOY / "topics.sh"

SERVICES = {"kafka", "topics", "worker", "desk", "postgres", "prometheus", "grafana"}
ONE_SHOT = {"topics"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

#: Read by the desk (desk/commands.py), not fields of the worker's Settings.
DESK_VARIABLES = {"PANTAU_DESK_DB", "PANTAU_DESK_PORT", "PANTAU_DESK_SECURE_COOKIES"}
#: Kafka TLS/SASL settings, being added to stream/settings.py (checked once they are fields there).
SECURITY_VARIABLES = {
    "PANTAU_SECURITY_PROTOCOL", "PANTAU_SASL_MECHANISM", "PANTAU_SASL_USERNAME", "PANTAU_SASL_PASSWORD",
    "PANTAU_SSL_CAFILE", "PANTAU_SSL_CERTFILE", "PANTAU_SSL_KEYFILE",
}  # fmt: skip
#: Host-side compose interpolation only (the worker replica count), never seen by a container.
COMPOSE_ONLY_VARIABLES = {"PANTAU_WORKERS"}

#: Written by the engineer doing the observability files (deploy/prometheus, deploy/grafana).
EXPECTED_MOUNTS = {"prometheus/prometheus.yml", "prometheus/rules.yml", "grafana/provisioning", "grafana/dashboards"}


def settings_variables() -> set[str]:
    return {f"PANTAU_{f.name.upper()}" for f in dataclasses.fields(Settings)}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def script_default(variable: str) -> str:
    match = re.search(r"\$\{" + variable + r":-([^}]*)\}", TOPICS_SH.read_text())
    assert match, f"topics.sh reads {variable} with a default"
    return match.group(1)


def interpolated_default(value: str) -> str:
    """``${VAR:-default}`` → ``default`` (compose interpolation), anything else unchanged."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def k8s_documents() -> dict[str, dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            if doc:
                docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


# --- compose -------------------------------------------------------------------------------------


def test_compose_loads_with_every_service():
    spec = compose()
    assert "version" not in spec, "the Compose specification has no version key"
    assert SERVICES <= set(spec["services"])


def test_depends_on_names_services_with_valid_conditions():
    services = compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, how in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = how.get("condition", "service_started")
            assert condition in CONDITIONS, f"{name} → {target}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy; it has no healthcheck"
            if condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for {target} to complete, a long-running service"


def test_every_long_running_service_has_a_healthcheck():
    services = compose()["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert str(service.get("restart", "no")) == "no", f"one-shot {name} must not restart"
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_kafka_is_apache_kafka_in_kraft_mode():
    spec = compose()
    kafka = spec["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = service_env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    for name, service in spec["services"].items():
        assert "zookeeper" not in f"{name} {service.get('image', '')}".lower()
        assert not [k for k in service_env(service) if "ZOOKEEPER" in k], name
    assert any(str(v).endswith(":/var/lib/kafka/data") for v in kafka["volumes"]), "Kafka keeps its log on a volume"


def test_worker_and_topics_agree_on_partitions_and_message_size():
    services = compose()["services"]
    worker, topics, kafka = (service_env(services[s]) for s in ("worker", "topics", "kafka"))
    partitions = int(worker["PANTAU_PARTITIONS"])
    assert int(topics.get("PANTAU_PARTITIONS", script_default("PANTAU_PARTITIONS"))) == partitions
    assert int(script_default("PANTAU_PARTITIONS")) == partitions
    assert int(kafka["KAFKA_NUM_PARTITIONS"]) == partitions
    assert int(service_env(services["desk"]).get("PANTAU_PARTITIONS", partitions)) == partitions
    assert int(env_file(K8S / "settings.env")["PANTAU_PARTITIONS"]) == partitions

    default = Settings().max_message_bytes
    assert int(script_default("PANTAU_MAX_MESSAGE_BYTES")) == default
    for env in (worker, topics):
        assert int(env.get("PANTAU_MAX_MESSAGE_BYTES", default)) == default
    assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) >= default


def test_worker_settings_are_valid_and_reachable(monkeypatch):
    services = compose()["services"]
    env = {k: interpolated_default(v) for k, v in service_env(services["worker"]).items()}
    settings = settings_from(monkeypatch, env)
    assert settings.web_host == "0.0.0.0", "Prometheus scrapes the workers from other containers"
    check = " ".join(services["worker"]["healthcheck"]["test"])
    assert f":{settings.web_port}/health" in check
    assert f"{settings.web_port}" in [str(p).split(":")[-1] for p in services["worker"].get("expose", [])]
    assert settings.broker == "kafka:9092"


def settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Settings.from_env() as the container would see ``env`` (no PANTAU_* of this process)."""
    for key in [k for k in os.environ if k.startswith("PANTAU_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings.from_env()


def test_k8s_settings_are_valid(monkeypatch):
    env = env_file(K8S / "settings.env")
    settings = settings_from(monkeypatch, env)
    assert settings.web_host == "0.0.0.0"
    assert settings.replication >= 3, "a production cluster keeps three copies"


def test_worker_state_is_per_replica():
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker, "replicas cannot share a name or host port"
    data = service_env(worker)["PANTAU_DATA_DIR"]
    mounts = worker.get("volumes", []) + [t if isinstance(t, str) else t.get("target") for t in worker.get("tmpfs", [])]
    targets = [m if isinstance(m, str) else m.get("target") for m in mounts]
    assert data in targets, "the worker's data dir is an anonymous volume or tmpfs"
    assert not [m for m in mounts if isinstance(m, str) and ":" in m and m.split(":")[1] == data], \
        "a named or bind volume would be shared between replicas"  # fmt: skip


def test_compose_commands_parse_with_the_pantau_cli():
    services = compose()["services"]
    worker = build_parser().parse_args(services["worker"]["command"])
    assert worker.command == "worker"
    desk = build_parser().parse_args(services["desk"]["command"])  # needs --metrics-host (desk/commands.py)
    assert (desk.command, desk.desk_command) == ("desk", "serve")
    assert desk.host == "0.0.0.0" and desk.metrics_host == "0.0.0.0"
    assert desk.broker == service_env(services["desk"])["PANTAU_BROKER"], "--broker and PANTAU_BROKER disagree"
    check = " ".join(services["desk"]["healthcheck"]["test"])
    assert f":{desk.port}/health" in check
    assert str(desk.metrics_port) in [str(p) for p in services["desk"].get("expose", [])]


def test_desk_uses_postgres_with_the_same_password():
    services = compose()["services"]
    env = service_env(services["desk"])
    url = env["PANTAU_DESK_DB"]
    assert url.startswith("postgresql+psycopg://")
    password = service_env(services["postgres"])["POSTGRES_PASSWORD"]
    assert f":{password}@postgres:5432/" in url
    assert env.get("PANTAU_DESK_SECURE_COOKIES") is not None


def compose_bind_mounts() -> list[str]:
    mounts = []
    for service in compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                mounts.append(os.path.normpath(source))
    return mounts


def test_expected_observability_mounts_are_declared():
    assert EXPECTED_MOUNTS <= set(compose_bind_mounts())


@pytest.mark.parametrize("source", sorted(set(compose_bind_mounts())))
def test_bind_mounted_files_exist(source):
    # prometheus/* and grafana/* come from the observability work; this fails until they land.
    assert (DEPLOY / source).exists(), f"deploy/{source} is mounted by compose.yaml but missing"


# --- PANTAU_* variables ----------------------------------------------------------------------------


DEPLOY_TEXTS = [COMPOSE, TOPICS_SH, DEPLOY / "Dockerfile", DEPLOY / "README.md", *sorted(K8S.glob("*"))]


def test_every_pantau_variable_is_a_real_setting():
    known = settings_variables() | DESK_VARIABLES | SECURITY_VARIABLES
    for path in DEPLOY_TEXTS:
        if not path.is_file():
            continue
        used = set(re.findall(r"\bPANTAU_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
        allowed = known | (COMPOSE_ONLY_VARIABLES if path in (COMPOSE, DEPLOY / "README.md") else set())
        assert used <= allowed, f"{path.relative_to(ROOT)}: unknown settings {sorted(used - allowed)}"


def test_security_variables_are_settings_once_added():
    fields = settings_variables()
    pending = sorted(SECURITY_VARIABLES - fields)
    if pending:
        pytest.skip(f"not yet fields of Settings (stream/settings.py): {', '.join(pending)}")
    assert SECURITY_VARIABLES <= fields


# --- topics.sh -------------------------------------------------------------------------------------


def test_topics_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(TOPICS_SH)], check=True)
    assert os.access(TOPICS_SH, os.X_OK)


def test_k8s_copy_of_topics_script_is_identical():
    assert (K8S / "topics.sh").read_bytes() == TOPICS_SH.read_bytes(), "cp deploy/topics.sh deploy/k8s/topics.sh"


STUB_TOPICS = """#!/bin/bash
echo "topics $*" >> "$STUB_LOG"
if [[ " $* " == *" --describe "* ]]; then
  topic=$(echo "$*" | sed -n 's/.*--topic \\([^ ]*\\).*/\\1/p')
  count=${STUB_PARTITIONS}; [ "$topic" = pantau.regional ] && count=1
  printf 'Topic: %s\\tTopicId: x\\tPartitionCount: %s\\tReplicationFactor: 1\\tConfigs: \\n' "$topic" "$count"
fi
"""
STUB_CONFIGS = """#!/bin/bash
echo "configs $*" >> "$STUB_LOG"
for a in "$@"; do if [ -f "$a" ]; then cat "$a" >> "$STUB_LOG"; fi; done
"""


def run_topics_script(tmp_path: Path, existing_partitions: int, **env: str) -> tuple[int, str]:
    """topics.sh against stand-ins for Kafka's tools, which log their arguments."""
    for name, body in (("kafka-topics.sh", STUB_TOPICS), ("kafka-configs.sh", STUB_CONFIGS)):
        (tmp_path / name).write_text(body)
        (tmp_path / name).chmod(0o755)
    log = tmp_path / "calls.log"
    base = {"PATH": os.environ["PATH"], "KAFKA_BIN": str(tmp_path), "STUB_LOG": str(log),
            "STUB_PARTITIONS": str(existing_partitions), "TMPDIR": str(tmp_path)}  # fmt: skip
    result = subprocess.run(["bash", str(TOPICS_SH)], env={**base, **env}, capture_output=True, text=True, timeout=60)
    return result.returncode, log.read_text() if log.exists() else ""


def test_topics_script_creates_every_topic(tmp_path):
    partitions = script_default("PANTAU_PARTITIONS")
    code, calls = run_topics_script(tmp_path, int(partitions))
    assert code == 0
    settings = Settings()
    for topic, count in settings.topics.items():
        expected = partitions if count == settings.partitions else str(count)
        create = [line for line in calls.splitlines() if "--create" in line and f"--topic {topic} " in line]
        assert len(create) == 1, topic
        assert "--if-not-exists" in create[0] and f"--partitions {expected} " in create[0]
        assert f"max.message.bytes={settings.max_message_bytes}" in create[0]
    assert "--bootstrap-server kafka:9092" in calls


def test_topics_script_refuses_another_partition_count(tmp_path):
    code, _ = run_topics_script(tmp_path, 8)
    assert code == 1


def test_topics_script_passes_tls_and_sasl_to_the_kafka_tools(tmp_path):
    code, calls = run_topics_script(
        tmp_path, 48, PANTAU_SECURITY_PROTOCOL="SASL_SSL", PANTAU_SASL_MECHANISM="SCRAM-SHA-512",
        PANTAU_SASL_USERNAME="pantau", PANTAU_SASL_PASSWORD="s3cret", PANTAU_SSL_CAFILE="/etc/pantau/tls/ca.pem",
    )  # fmt: skip
    assert code == 0
    assert "--command-config" in calls
    assert "security.protocol=SASL_SSL" in calls and "sasl.mechanism=SCRAM-SHA-512" in calls
    assert 'ScramLoginModule required username="pantau" password="s3cret";' in calls
    assert "ssl.truststore.location=/etc/pantau/tls/ca.pem" in calls
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp.")], "the properties file is removed"


# --- Dockerfile ------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_dockerfile_runs_pantau_as_a_non_root_user():
    rows = dockerfile_instructions()
    final = max(i for i, (k, _) in enumerate(rows) if k == "FROM")
    assert rows[final][1].split()[0] == "python:3.11-slim"
    users = [v for k, v in rows[final:] if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image runs as a non-root user"
    assert any(k == "RUN" and re.search(r"pip install [\"']?\.\[postgres\]", v) for k, v in rows), "installs pantau[postgres]"
    assert ("ENTRYPOINT", '["pantau"]') in rows
    exposed = {p for k, v in rows if k == "EXPOSE" for p in v.split()}
    assert {"6066", "8000", "9108"} <= exposed
    assert not [k for k, _ in rows if k == "HEALTHCHECK"], "compose and Kubernetes define the health checks"


def test_dockerfile_copies_what_the_package_needs_and_dockerignore_keeps_it():
    rows = dockerfile_instructions()
    sources = [s for k, v in rows if k == "COPY" and not v.startswith("--from") for s in shlex.split(v)[:-1]]
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"], *project["tool"]["setuptools"]["package-dir"].values()}
    assert needed <= {s.rstrip("/") for s in sources}
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]  # fmt: skip
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") not in ignored, f".dockerignore drops {source}, which the Dockerfile copies"
    assert "pantau/data" not in ignored and "*.jsonl.gz" not in ignored, "the shipped demo data stays in the image"


# --- Kubernetes ------------------------------------------------------------------------------------


def test_kustomization_resources_load():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "pantau"
    for resource in kustomization["resources"]:
        docs = [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
        assert docs, resource
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), resource
    for generator in kustomization.get("configMapGenerator", []) + kustomization.get("secretGenerator", []):
        for source in generator.get("envs", []) + generator.get("files", []):
            assert (K8S / source.split("=")[-1]).is_file(), source


def test_k8s_deployments_have_probes_resources_and_valid_commands():
    docs = k8s_documents()
    deployments = {n: d for n, d in docs.items() if n.startswith("Deployment/")}
    assert {"Deployment/pantau-worker", "Deployment/pantau-desk"} <= set(deployments)
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, name
            assert container["resources"]["requests"] and container["resources"]["limits"], name
            args = build_parser().parse_args(container["args"])
            assert args.command in ("worker", "desk"), name
    worker = deployments["Deployment/pantau-worker"]["spec"]
    assert worker["replicas"] == 2
    probe = worker["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert probe["path"] == "/health"
    desk = build_parser().parse_args(deployments["Deployment/pantau-desk"]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert desk.metrics_host == "0.0.0.0"


def test_k8s_worker_metrics_service_is_headless_and_scraped():
    service = k8s_documents()["Service/pantau-worker-metrics"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(Settings().web_port)


def test_k8s_topics_job_uses_the_kafka_image_and_script():
    job = k8s_documents()["Job/pantau-topics"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("apache/kafka:")
    assert container["command"][-1].endswith("/topics.sh")


def test_kustomize_build():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert all(d["metadata"].get("namespace") == "pantau" for d in built if d["kind"] != "Namespace")
    assert {d["kind"] for d in built} >= {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Job"}


# --- docker compose config -------------------------------------------------------------------------


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy and subprocess.run([legacy, "version"], capture_output=True).returncode == 0:
        return [legacy]
    return None


def test_docker_compose_config(tmp_path):
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    env = {**os.environ, "POSTGRES_PASSWORD": "test", "GRAFANA_ADMIN_PASSWORD": "test"}
    path = COMPOSE
    if command[-1].endswith("docker-compose"):
        # Compose v1 predates the top-level `name:`; everything else is checked as written.
        path = tmp_path / "compose.yaml"
        path.write_text(re.sub(r"(?m)^name: .*$", "", COMPOSE.read_text()))
    result = subprocess.run([*command, "-f", str(path), "--project-directory", str(DEPLOY), "config", "-q"],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- runbook ---------------------------------------------------------------------------------------

#: The alerts issue 8 names; rules.yml (deploy/prometheus) may add more, each needing an entry too.
RUNBOOK_ALERTS = {
    "PantauWorkerDown", "PantauNoSubmissions", "PantauConsumerLagGrowing", "PantauDeadLetterRateHigh",
    "PantauAlertStormInRegion", "PantauDeskBacklogOld", "PantauVerdictsNotPublished", "PantauAlertLatencyHigh",
}  # fmt: skip


def test_runbook_has_an_entry_per_alert():
    readme = (DEPLOY / "README.md").read_text()
    assert "\n## Runbook\n" in readme
    runbook = readme.split("\n## Runbook\n", 1)[1].split("\n## ", 1)[0]
    entries = set(re.findall(r"^### (\w+)$", runbook, flags=re.M))
    alerts = set(RUNBOOK_ALERTS)
    rules = DEPLOY / "prometheus" / "rules.yml"
    if rules.is_file():
        alerts |= {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert alerts <= entries, f"no runbook entry for {sorted(alerts - entries)}"
    assert entries <= alerts, f"runbook entries for unknown alerts {sorted(entries - alerts)}"
