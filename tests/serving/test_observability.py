"""The observability kit (infra/observability) agrees with the service it watches.

* Every metric name the alert rules and the Grafana dashboard query is on a running service's /metrics (the names
  the exposition format gives each declared family: counters ``_total``, histograms ``_bucket``/``_sum``/``_count``),
  and the newest ``monitor check`` report's verdict is there as written.
* The rules are well formed: promtool (``check config``, ``check rules`` and the alert unit tests in
  ``prometheus/tests``) where it is installed, and always a structure check plus a PromQL parse (tests/serving/promql).
* Where Debian's ``prometheus`` package is installed (CI installs it), its Prometheus scrapes a live service with
  this scrape job and evaluates these rules: no rule errs, a breach fires, every dashboard query answers.
* The thresholds follow the settings; the dashboard, the Grafana provisioning and the compose services fit together.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlplatform.contracts.reports import report_stem
from mlplatform.settings import PROJECT_ROOT, Settings
from serving.app import create_app
from tests.serving.conftest import make_txns, set_aliases, txn_body
from tests.serving.promql import PromQLError, parse

INFRA = PROJECT_ROOT / "infra"
OBS = INFRA / "observability"
PROMETHEUS = OBS / "prometheus"
RULES = PROMETHEUS / "rules" / "mlplatform.rules.yml"
ALERT_TESTS = PROMETHEUS / "tests" / "alerts.test.yml"
DASHBOARD = OBS / "grafana" / "dashboards" / "mlplatform.json"
PROMETHEUS_OWN = {"up"}  # series Prometheus itself writes for each target, never on /metrics
# what the issue asks alerts for, by the alert that covers it
REQUIRED_ALERTS = {"ServingLatencyP99OverBudget", "ServingUnavailableAnswers", "ServingFallbackRateHigh",
                   "MissingFeatureRateHigh", "StaleFeatureRateHigh", "FeatureLogBacklogHigh", "StreamLagHigh",
                   "MonitoringCheckBreach"}
DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")
GROUP = "mlplatform-activity"  # the stream consumers' group (docs/streaming.md)


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _rule(name: str) -> dict:
    return next(r for r in _rules() if r["alert"] == name)


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def _threshold(expr: str) -> float:
    """The number an alert's expression compares with, at its end (``... > 0.025``)."""
    m = re.search(r"(?:>|==)\s*([0-9.eE+-]+)\s*$", expr.strip())
    assert m, f"no trailing threshold in {expr!r}"
    return float(m.group(1))


def exposed_names(text: str) -> tuple[set[str], set[str]]:
    """(every sample name the declared families may carry, the sample names present), from an exposition text.

    A labelled family with no child yet carries no sample (only its HELP and TYPE), so names are derived from each
    family's type as the exposition format defines them."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created"), "summary": ("", "_sum", "_count", "_created"),
                "info": ("_info",), "stateset": ("",),
                "gaugehistogram": ("_bucket", "_gsum", "_gcount"), "unknown": ("",)}
    declared, present = set(), set()
    for family in text_string_to_metric_families(text):
        declared |= {family.name + s for s in suffixes[family.type]}
        present |= {s.name for s in family.samples}
    return declared, present


def _samples(text: str, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


def _write_check(folder: Path, when: datetime, status: str, breaches: list[str]) -> Path:
    """A `monitor check` summary as the reports contract lays it out (mlplatform/contracts/reports.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report_stem('check', when)}.json"
    body = {"kind": "check", "created_at": when.isoformat(), "html": None, "status": status, "breaches": breaches,
            "exit_code": 10 if breaches else 0, "headline": "written by the test"}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    tmp.rename(path)  # as monitoring writes it: renamed into place
    return path


# --- against a running service ----------------------------------------------------------------------------------
def test_every_metric_the_rules_and_dashboard_query_is_on_metrics(serving_settings, trained_models, online_world,
                                                                  redis_dbs, live_server):
    settings = serving_settings()
    set_aliases(settings, golden=trained_models.versions[0])
    redis = redis_dbs.client(0)
    redis.xgroup_create(settings.events_stream, GROUP, id="$", mkstream=True)  # so the lag gauge has a value
    reports = settings.layout.reports_dir
    checked_at = datetime(2026, 3, 1, 6, 0, 0, 123456, tzinfo=UTC)
    _write_check(reports, checked_at, "breach", ["skew: 3 features drifted", "quality: ROC AUC 0.61 < 0.7"])
    txns = make_txns(online_world, 3, seed=11, when=trained_models.scoring_time)
    try:
        with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
            for row in txns.itertuples():
                assert client.post("/v1/predict", json=txn_body(row)).status_code == 200
            deadline = time.monotonic() + 10
            while True:  # the lag gauge is read in the background, every second; the scored transactions are
                text = client.get("/metrics").text  # appended to the stream off the request path
                lag = _samples(text, "mlplatform_stream_lag")
                if lag == {(): float(len(txns))} or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            # nothing was delivered to the group: its lag is every entry appended since it was created
            assert lag == {(): float(redis.xlen(settings.events_stream))} == {(): float(len(txns))}

            # the newest check's verdict, as written
            assert _samples(text, "mlplatform_monitor_check_breaches") == {(): 2.0}
            assert _samples(text, "mlplatform_monitor_check_timestamp_seconds") == {(): checked_at.timestamp()}
            status = _samples(text, "mlplatform_monitor_check_status")
            assert status[(("status", "breach"),)] == 1.0 and sum(status.values()) == 1.0
            # a newer one replaces it at the next scrape; an older one written afterwards does not
            later = checked_at + timedelta(days=1)
            _write_check(reports, later, "ok", [])
            _write_check(reports, checked_at - timedelta(days=3), "error", [])
            after = client.get("/metrics").text
            assert _samples(after, "mlplatform_monitor_check_breaches") == {(): 0.0}
            assert _samples(after, "mlplatform_monitor_check_timestamp_seconds") == {(): later.timestamp()}
            assert _samples(after, "mlplatform_monitor_check_status")[(("status", "ok"),)] == 1.0
    finally:
        redis.delete(settings.events_stream)

    declared, present = exposed_names(text)
    # the scrape is real: what the predictions, the consumer group and the report produced has samples
    assert {"mlplatform_predictions_total", "mlplatform_prediction_latency_seconds_bucket",
            "mlplatform_stream_lag", "mlplatform_monitor_check_breaches"} <= present
    used = {}
    for where, exprs in (("rules", [r["expr"] for r in _rules()]), ("dashboard", _dashboard_exprs())):
        for expr in exprs:
            for name in parse(expr).metrics:
                used.setdefault(name, where)
    missing = {name: where for name, where in used.items() if name not in declared and name not in PROMETHEUS_OWN}
    assert not missing, f"queried but not on /metrics: {missing}"
    # the latency budget is a bucket bound, so the p99 alert compares with an exact count, not an interpolation
    bounds = {float(dict(k)["le"]) for k in _samples(text, "mlplatform_prediction_latency_seconds_bucket")}
    assert _threshold(_rule("ServingLatencyP99OverBudget")["expr"]) in bounds


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(what: str, fn, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_prometheus_scrapes_the_service_evaluates_every_rule_and_answers_every_panel(
        serving_settings, trained_models, online_world, redis_dbs, live_server, tmp_path):
    """The real Prometheus (Debian's package, beside promtool) with this scrape job and these rules, against a live
    service: the target is up, no rule fails to evaluate on real series (label matching is only checked then),
    a breach in the newest check report fires MonitoringCheckBreach, and every dashboard query answers."""
    binary = shutil.which("prometheus")
    if binary is None:
        warnings.warn("prometheus is not installed: the queries were only parsed, not evaluated", stacklevel=1)
        for expr in _dashboard_exprs() + [r["expr"] for r in _rules()]:
            parse(expr)
        return
    settings = serving_settings()
    set_aliases(settings, golden=trained_models.versions[0])
    _write_check(settings.layout.reports_dir, datetime.now(UTC), "breach", ["skew: 3 features drifted"])
    txns = make_txns(online_world, 3, seed=12, when=trained_models.scoring_time)
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    config["rule_files"] = [str(RULES)]
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        for row in txns.itertuples():
            assert client.post("/v1/predict", json=txn_body(row)).status_code == 200
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{srv.port}"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = _free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as prom:
                def api(path: str, **params) -> dict:
                    try:
                        r = prom.get(f"/api/v1/{path}", params=params)
                    except httpx.TransportError:
                        return {}
                    return r.json() if r.status_code == 200 else {}

                def targets_up() -> bool:
                    active = api("targets").get("data", {}).get("activeTargets", [])
                    return bool(active) and all(t["health"] == "up" for t in active)

                _wait_for("the service's target to be up", targets_up)
                firing = _wait_for("MonitoringCheckBreach to fire", lambda: [
                    a for a in api("alerts").get("data", {}).get("alerts", [])
                    if a["labels"]["alertname"] == "MonitoringCheckBreach" and a["state"] == "firing"])
                assert firing[0]["value"] in ("1", "1e+00")
                time.sleep(3)  # a few more scrapes and evaluations: every rule has run on real series
                rules = [r for g in api("rules")["data"]["groups"] for r in g["rules"]]
                assert {r["name"] for r in rules} == {r["alert"] for r in _rules()}
                failing = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
                assert not failing, f"rules failed to evaluate: {failing}"
                served = api("query", query="sum(mlplatform_predictions_total)")["data"]["result"]
                assert float(served[0]["value"][1]) == len(txns)
                for expr in _dashboard_exprs():
                    answer = api("query", query=expr.replace("$__rate_interval", "1m"))
                    assert answer.get("status") == "success", f"{expr}: {answer}"
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()


def test_monitor_check_metrics_without_a_report_declare_families_with_no_sample(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from mlplatform.contracts.check_metrics import CheckReportCollector

    registry = CollectorRegistry()
    registry.register(CheckReportCollector(tmp_path / "reports"))  # the folder does not exist yet
    declared, present = exposed_names(generate_latest(registry).decode())
    assert {"mlplatform_monitor_check_breaches", "mlplatform_monitor_check_timestamp_seconds"} <= declared
    assert not present
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "check-20260301T060000000000Z.json").write_text("{not json")
    assert not exposed_names(generate_latest(registry).decode())[1]  # unreadable: still no sample, no error
    _write_check(tmp_path / "reports", datetime(2026, 3, 2, tzinfo=UTC), "nothing to check", [])
    text = generate_latest(registry).decode()
    assert _samples(text, "mlplatform_monitor_check_status")[(("status", "nothing to check"),)] == 1.0
    assert _samples(text, "mlplatform_monitor_check_timestamp_seconds") == {(): 1772409600.0}  # 2026-03-02Z


# --- the rules ----------------------------------------------------------------------------------------------------
def check_rules_structure() -> None:
    """The rules file's structure, each expression's PromQL, and the annotations' templates (no promtool needed)."""
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"}
    names = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"], group
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            names.append(rule["alert"])
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
            parsed = parse(rule["expr"])
            assert parsed.metrics, f"{rule['alert']} selects no metric"
            assert parsed.top_operator in {">", "<", "==", "!=", ">=", "<="}, f"{rule['alert']}: not a comparison"
            assert "for" not in rule or DURATION.match(str(rule["for"])), rule["for"]
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
            for text in rule["annotations"].values():
                assert text.count("{{") == text.count("}}"), text
                for tpl in re.findall(r"\{\{(.*?)\}\}", text):
                    assert re.fullmatch(r"\s*\$(value|labels\.\w+)(\s*\|\s*\w+)?\s*", tpl), tpl
    assert len(names) == len(set(names)), "alert names repeat"
    assert REQUIRED_ALERTS <= set(names)


def test_rules_structure_and_promql():
    check_rules_structure()


def test_the_promql_parser_rejects_what_prometheus_rejects():
    """The parser path must be able to fail: a few broken expressions, each refused."""
    for bad in ("sum(rate(x[5m])", "rate(x)", 'x{a=b}', "x >", "histogram_quantile(x, y)", "x + on(a b) y",
                "nofunction(x)", "sum(x, y)", "x[5m] + y", "x[5]"):
        with pytest.raises(PromQLError):
            parse(bad)
    assert parse('sum by (le) (rate(a_bucket{job="j"}[5m])) / ignoring(le) group_left b > bool 1').metrics == {
        "a_bucket", "b"}


def test_rules_pass_promtool_or_the_parser():
    """promtool's own checks and the alert unit tests where promtool is installed (CI installs it); else the
    parser's checks run here too, and a warning says promtool was not there."""
    promtool = shutil.which("promtool")
    if promtool is None:
        warnings.warn("promtool is not installed: the alert rules were checked by the test's parser only",
                      stacklevel=1)
        check_rules_structure()
        return
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", str(RULES)],
                 ["test", "rules", str(ALERT_TESTS)]):
        run = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, f"promtool {' '.join(args)}:\n{run.stdout}\n{run.stderr}"
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert {r["alert"] for r in _rules()} <= tested, "an alert has no unit test"


def test_thresholds_follow_the_settings():
    default = {name: f.default for name, f in Settings.model_fields.items()}
    assert _threshold(_rule("ServingLatencyP99OverBudget")["expr"]) == default["serving_latency_budget_ms"] / 1000
    assert _threshold(_rule("FeatureLogBacklogHigh")["expr"]) == default["feature_log_max_queue_rows"] / 2
    assert _threshold(_rule("MonitoringCheckStale")["expr"]) == 2 * 86_400


# --- dashboard, provisioning, compose ------------------------------------------------------------------------------
def test_dashboard_panels_query_the_provisioned_datasource():
    dash = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load((OBS / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    uids = {d["uid"] for d in datasources}
    cells: set[tuple[int, int]] = set()
    assert dash["uid"] and dash["title"]
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids and panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] in uids
            parse(t["expr"])
    exprs = " ".join(_dashboard_exprs())
    for name in ("mlplatform_stream_lag", "mlplatform_prediction_latency_seconds_bucket",
                 "mlplatform_monitor_check_breaches", "mlplatform_feature_log_backlog"):
        assert name in exprs, f"the dashboard does not show {name}"


def test_compose_runs_prometheus_and_grafana_behind_a_profile_with_these_files():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"], name
        for port in services[name]["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name} is published beyond the host: {port}"
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            assert (INFRA / source).exists(), f"{name} mounts {source}, which does not exist"
    for name in ("redis", "serving"):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    prom = services["prometheus"]
    mounts = dict(v.split(":")[:2][::-1] for v in prom["volumes"])  # container path -> host path
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_in_container = Path(config_flag.split("=", 1)[1])
    host_dir = INFRA / mounts[str(config_in_container.parent)]
    config = yaml.safe_load((host_dir / config_in_container.name).read_text())
    port = services["serving"]["environment"]["MLPLATFORM_SERVING_PORT"]
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"serving:{port}"]
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"])
    rule_files = [f for pattern in config["rule_files"] for f in host_dir.glob(pattern)]
    assert rule_files == [RULES]
    graf = services["grafana"]
    gmounts = dict(v.split(":")[:2][::-1] for v in graf["volumes"])
    provisioning = INFRA / gmounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "mlplatform.yml").read_text())["providers"]
    dash_dir = INFRA / gmounts[providers[0]["options"]["path"]]
    assert DASHBOARD in dash_dir.glob("*.json")
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services
    assert graf["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_operations_doc_explains_every_alert():
    doc = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    section = doc.split("## Dashboards and alerts", 1)[1].split("\n## ", 1)[0]
    assert "docker compose -f infra/compose.yaml --profile observability up" in section
    for rule in _rules():
        assert f"`{rule['alert']}`" in section, f"docs/operations.md does not explain {rule['alert']}"
