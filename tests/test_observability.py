"""Prometheus config, rules and their unit tests, the metrics' exposition, and the Grafana dashboard.

Every metric a rule or a panel queries must be one the worker or the desk exports (with the labels it
is filtered and grouped by); every alert must carry a severity and its text, and be tested firing and
not firing in deploy/prometheus/rules_test.yml. The promtool checks skip without promtool.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pantau.desk.db import connect
from pantau.desk.metrics import DeskMetrics
from pantau.stream.metrics import Metrics
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

SEVERITIES = {"info", "warning", "critical"}
#: annotations every alert carries: Bahasa Indonesia, English (like pantau's reason / reason_en), runbook
ANNOTATIONS = {"summary", "description", "summary_en", "description_en", "runbook_url"}
#: series Prometheus makes itself: scrape health and firing alerts
BUILTIN = {"up": {"job", "instance"}, "ALERTS": {"alertname", "alertstate", "severity", "provinsi", "job", "instance"}}
#: labels Prometheus adds to every scraped series
TARGET_LABELS = {"job", "instance"}

#: One realistic use of every worker metric, by family name (counters without ``_total``). A metric
#: added to stream/metrics.py must be added here (and to the dashboard, if it is worth watching).
WORKER_USES: dict[str, list[tuple[dict[str, str], float]]] = {
    "pantau_submissions": [({"outcome": "processed"}, 120), ({"outcome": "deadlettered"}, 1)],
    "pantau_alerts": [({"detector": "form.sum_valid", "severity": "critical", "provinsi": "33"}, 1),
                      ({"detector": "stat.2bl", "severity": "warning", "provinsi": "34"}, 1)],
    "pantau_alerts_suppressed": [({"detector": "ocr.misread"}, 1)],
    "pantau_verdicts": [({"outcome": "applied"}, 3), ({"outcome": "outdated"}, 1), ({"outcome": "deadlettered"}, 1)],
    "pantau_deadletters": [({"reason": "schema"}, 1)],
    "pantau_alert_latency_seconds": [({}, 0.42)],
    "pantau_processing_seconds": [({}, 0.0007)],
    "pantau_batch_submissions": [({}, 250)],
    "pantau_consumer_lag_messages": [({"partition": "0"}, 1200), ({"partition": "7"}, 0)],
    "pantau_partitions_stalled": [({}, 1)],
    "pantau_tps_first_seen": [({"provinsi": "33", "jenis": "ppwp"}, 118), ({"provinsi": "33", "jenis": "pdpr"}, 40)],
    "pantau_tps_expected": [({"provinsi": "33"}, 117299)],
}
DESK_USES: dict[str, list[tuple[dict[str, str], float]]] = {
    "pantau_desk_alerts_consumed": [({"outcome": "new"}, 5), ({"outcome": "repeat"}, 1)],
    "pantau_desk_submissions_consumed": [({"outcome": "new"}, 9), ({"outcome": "repeat"}, 2)],
    "pantau_desk_messages_skipped": [({"topic": "pantau.alerts"}, 1)],
    "pantau_desk_verdicts_published": [({}, 2)],
}


def _exercise(registry_owner: object, uses: dict[str, list[tuple[dict[str, str], float]]]) -> None:
    wrappers = {w.describe()[0].name: w for w in vars(registry_owner).values() if isinstance(w, MetricWrapperBase)}
    missing = sorted(set(uses) - set(wrappers))
    assert not missing, f"{type(registry_owner).__name__} does not define {missing}"
    unused = sorted(set(wrappers) - set(uses))
    assert not unused, f"metrics {unused} are not exercised by tests/test_observability.py: add them to its *_USES"
    for name, calls in uses.items():
        wrapper = wrappers[name]
        kind = wrapper.describe()[0].type
        for labels, value in calls:
            child = wrapper.labels(**labels) if labels else wrapper
            if kind == "counter":
                child.inc(value)
            elif kind == "gauge":
                child.set(value)
            else:
                child.observe(value)


@pytest.fixture(scope="module")
def worker_metrics() -> Metrics:
    metrics = Metrics()
    _exercise(metrics, WORKER_USES)
    return metrics


@pytest.fixture(scope="module")
def desk_metrics(tmp_path_factory: pytest.TempPathFactory) -> DeskMetrics:
    metrics = DeskMetrics()
    _exercise(metrics, DESK_USES)
    metrics.watch(connect(f"sqlite:///{tmp_path_factory.mktemp('desk')}/d.db"))
    return metrics


@pytest.fixture(scope="module")
def exported(worker_metrics: Metrics, desk_metrics: DeskMetrics) -> dict[str, set[str]]:
    """Series names as Prometheus stores them (``x_total``, ``h_bucket``…) → their label names."""
    names: dict[str, set[str]] = {}
    for registry in (worker_metrics.registry, desk_metrics.registry):
        for family in registry.collect():
            assert family.samples, f"{family.name} exported no sample"
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


@pytest.fixture(scope="module")
def rules() -> dict:
    return yaml.safe_load((PROMETHEUS / "rules.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def recorded(rules: dict) -> set[str]:
    return {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}


# ---------------------------------------------------------------------------------------------- promtool


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("needs promtool (Debian package prometheus; .ci/run installs it)")
    return path


def _promtool(promtool: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], check=False, input=stdin, capture_output=True, cwd=ROOT, timeout=120)


def _output(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).decode(errors="replace")


def test_prometheus_config_is_valid(promtool: str) -> None:
    # also loads rules.yml, relative to the config file
    result = _promtool(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, _output(result)
    assert "1 rule files found" in _output(result)


def test_rules_are_valid(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", str(PROMETHEUS / "rules.yml"))
    assert result.returncode == 0, _output(result)


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = _promtool(promtool, "test", "rules", str(PROMETHEUS / "rules_test.yml"))
    assert result.returncode == 0, _output(result)


@pytest.mark.parametrize("which", ["worker", "desk"])
def test_exposition_passes_promtool_lint(promtool: str, which: str, worker_metrics: Metrics, desk_metrics: DeskMetrics) -> None:
    registry = (worker_metrics if which == "worker" else desk_metrics).registry
    result = _promtool(promtool, "check", "metrics", stdin=generate_latest(registry))
    assert result.returncode == 0 and not _output(result).strip(), _output(result)


# ---------------------------------------------------------------------------------------------- expressions

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"(?<![\w:])(pantau_[a-z_]+|up|ALERTS)(?![\w:])")
_RECORDED = re.compile(r"(?<![\w:])(pantau:[a-z0-9_:]+)")
_SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def expression_problems(expr: str, exported: dict[str, set[str]], recorded: set[str]) -> list[str]:
    """What in a PromQL expression names a series no one exports, or a label those series lack."""
    bare = _STRING.sub('""', expr)
    problems = []
    metrics = set(_METRIC.findall(bare))
    known = {**exported, **BUILTIN}
    problems += [f"{name}: not exported by the worker or the desk" for name in sorted(metrics - set(known))]
    problems += [f"{name}: no such recording rule in rules.yml" for name in sorted(set(_RECORDED.findall(bare)) - recorded)]
    for name, matchers in _SELECTOR.findall(expr):
        if name in known:
            labels = known[name] | TARGET_LABELS
            problems += [f"{name}{{{label}…}}: {name} has no label {label}"
                         for label in _MATCHER.findall(matchers) if label not in labels]
    # grouping labels: each must be a label of one of the series the expression reads (or a recording rule's)
    available = set().union(*(known.get(name, set()) for name in metrics), TARGET_LABELS)
    if not _RECORDED.search(bare):
        for group in _GROUPING.findall(bare):
            for label in filter(None, (part.strip() for part in group.split(","))):
                if label not in available:
                    problems.append(f"by/on ({label}): no series in the expression has label {label}")
    return problems


def test_expression_checker_catches_mistakes(exported: dict[str, set[str]]) -> None:
    assert not expression_problems('sum by (provinsi) (rate(pantau_alerts_total{severity="critical"}[5m]))', exported, set())
    assert expression_problems("rate(pantau_alert_total[5m])", exported, set())  # misspelt
    assert expression_problems("pantau_alert_latency_seconds", exported, set())  # a histogram has no bare series
    assert expression_problems('pantau_alerts_total{province="33"}', exported, set())
    assert expression_problems("sum by (province) (pantau_alerts_total)", exported, set())
    assert expression_problems("pantau:nothing:rate5m", exported, {"pantau:submissions:rate5m"})


# ---------------------------------------------------------------------------------------------- rules


def _rules(rules: dict) -> list[dict]:
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_rule_expressions_read_exported_metrics(rules: dict, recorded: set[str], exported: dict[str, set[str]]) -> None:
    problems = [f"{rule.get('alert') or rule.get('record')}: {problem}"
                for rule in _rules(rules) for problem in expression_problems(rule["expr"], exported, recorded)]  # fmt: skip
    assert not problems, "\n".join(problems)


def test_recording_rules_follow_the_naming_convention(rules: dict) -> None:
    for rule in _rules(rules):
        if "record" in rule:
            assert re.fullmatch(r"pantau:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_alerts_carry_severity_and_text(rules: dict) -> None:
    alerts = [rule for rule in _rules(rules) if "alert" in rule]
    assert len(alerts) >= 8
    for rule in alerts:
        assert rule["alert"].startswith("Pantau"), rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        annotations = rule.get("annotations", {})
        assert ANNOTATIONS <= set(annotations), f"{rule['alert']} lacks {sorted(ANNOTATIONS - set(annotations))}"
        assert all(str(annotations[key]).strip() for key in ANNOTATIONS), rule["alert"]
        assert annotations["runbook_url"].startswith("deploy/README.md#"), rule["alert"]


def test_every_alert_is_tested_firing_and_not_firing(rules: dict) -> None:
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["rules.yml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in _rules(rules) if "alert" in rule}
    assert alerts - firing == set(), f"never tested firing: {sorted(alerts - firing)}"
    assert alerts - quiet == set(), f"never tested not firing: {sorted(alerts - quiet)}"
    assert (firing | quiet) - alerts == set(), "tests of alerts rules.yml does not have"
    tested_records = {case["expr"] for test in tests["tests"] for case in test.get("promql_expr_test", [])}
    assert {"pantau:coverage:ratio", "pantau:coverage_national:ratio"} <= tested_records


def test_prometheus_scrapes_the_worker_and_the_desk() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["rules.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"pantau-worker", "pantau-desk"} <= set(jobs)
    assert jobs["pantau-worker"]["dns_sd_configs"][0]["port"] == 6066
    assert jobs["pantau-desk"]["static_configs"][0]["targets"] == ["desk:9108"]
    assert config["global"]["scrape_interval"] == "15s"


# ---------------------------------------------------------------------------------------------- grafana


def _panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


def _datasource_uid() -> str:
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (source,) = provisioning["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    return source["uid"]


def test_grafana_provisioning_loads() -> None:
    assert _datasource_uid() == "prometheus"
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "pantau.yml").read_text(encoding="utf-8"))
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboards_exist() -> None:
    assert [path.name for path in DASHBOARDS] == ["pantau-overview.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard["uid"] == path.stem and dashboard["schemaVersion"] >= 36
    assert dashboard["time"]["from"] == "now-24h" and dashboard["refresh"] == "30s"
    uid = _datasource_uid()
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in ("h", "w", "x", "y")), panel["title"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel.get("targets"), f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and target["expr"].strip(), panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_queries_read_exported_metrics(path: Path, exported: dict[str, set[str]], recorded: set[str]) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            problems += [f"{panel['title']}: {problem}" for problem in expression_problems(target["expr"], exported, recorded)]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert match, query
        metric, label = match.groups()
        if metric not in exported or label not in exported[metric]:
            problems.append(f"variable {variable['name']}: {metric} with label {label} is not exported")
    assert not problems, "\n".join(problems)


def test_overview_dashboard_covers_election_night(exported: dict[str, set[str]]) -> None:
    """Each exported pantau series shows on the overview (the desk's counters may be summed up)."""
    dashboard = json.loads((GRAFANA / "dashboards" / "pantau-overview.json").read_text(encoding="utf-8"))
    exprs = " ".join(target["expr"] for panel in _panels(dashboard) for target in panel.get("targets", []))
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert "provinsi" in variables
    shown = set(_METRIC.findall(_STRING.sub('""', exprs)))
    histograms = {name.removesuffix("_bucket") for name in exported if name.endswith("_bucket")}
    wanted = {name for name in exported if not name.endswith(("_bucket", "_sum", "_count"))}
    wanted |= {f"{name}_bucket" for name in histograms}
    # pantau_tps_first_seen_total and pantau_tps_expected show through the coverage recording rules
    missing = wanted - shown - {"pantau_tps_expected"}
    assert not missing, f"not on the dashboard: {sorted(missing)}"
    for rule in ("pantau:coverage:ratio", "pantau:tps_seen_ppwp:increase3d", "pantau:tps_expected:max"):
        assert rule in exprs
