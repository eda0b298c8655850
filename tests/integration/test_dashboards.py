"""deploy/grafana/lb-dashboard.json and deploy/prometheus/lb-alerts.yml against the real thing:
every metric their PromQL names is one `lb run` exports (checked on a live /metrics after
traffic that makes every labelled family appear), the dashboard is JSON Grafana can import
(unique panel ids, the datasource an input), the alerts are a Prometheus rule file.

Two lbs serve the traffic, because no single config exports every family: the one with
`redis:` (shared cache, a `scope: shared` rate limit, a queue in Redis) has `lb_redis_up`, and
the one without runs its queue's jobs in its own workers, which is where
`lb_queue_lag_seconds` and `lb_queue_job_duration_seconds` are observed (with Redis, jobs run
in `lb worker` processes, which serve no /metrics). promtool (Debian package `prometheus`)
also checks the rule file when it is installed; it is not a dependency.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RedisServer, wait_for
from tests.integration.helpers import (
    REPO,
    LbProcess,
    Origin,
    free_port,
    get_json,
    request,
)

DASHBOARD = REPO / "deploy" / "grafana" / "lb-dashboard.json"
ALERTS = REPO / "deploy" / "prometheus" / "lb-alerts.yml"

# PromQL, loosely: quoted strings (label values, regexes) are dropped, then every identifier
# that starts with lb_ is a metric name (lb's label names never do).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"(?<![\w:$])lb_[A-Za-z0-9_:]*")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def metric_names(expr: str) -> set[str]:
    """The lb metric names one PromQL expression reads, as written (`lb_requests_total`)."""
    return set(_NAME.findall(_STRING.sub('""', expr)))


def family(name: str) -> str:
    """`lb_request_duration_seconds_bucket` -> `lb_request_duration_seconds`."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def sample_names(exposition: str) -> set[str]:
    """The series names Prometheus would store from a /metrics text: a Counter `lb_requests`
    is `lb_requests_total`, a Histogram `x` is `x_bucket`, `x_count` and `x_sum`."""
    return {
        sample.name
        for metric in text_string_to_metric_families(exposition)
        for sample in metric.samples
    }


def missing(names: set[str], exported: set[str]) -> dict[str, str]:
    """Each name not among the `exported` sample names, with what it probably meant."""
    problems = {}
    for name in sorted(names - exported):
        variants = sorted(s for s in exported if family(s) == family(name))
        problems[name] = f"exported as {', '.join(variants)}" if variants else "not exported"
    return problems


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL in a dashboard: panel targets (`expr`) and template variables (`query`,
    `definition`), rows' nested panels included."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: dashboard[k] for k in ("panels", "templating") if k in dashboard})
    return found


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def alert_rules(rules_file: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in rules_file["groups"] for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def load_alerts() -> dict[str, Any]:
    return dict(yaml.safe_load(ALERTS.read_text()))


# The extractor and the comparison, on their own (no lb) ------------------------------------


def _exposition() -> str:
    """What prometheus-client writes for a Counter, a Histogram and a Gauge named as lb's
    (less the `_created` samples, which lb's multiprocess exposition has not)."""
    registry = CollectorRegistry()
    Counter("lb_requests", "", ["route", "code"], registry=registry).labels("a", "200").inc()
    Histogram("lb_request_duration_seconds", "", ["route"], registry=registry).labels("a").observe(
        0.1
    )
    Gauge("lb_redis_up", "", registry=registry).set(1)
    text = generate_latest(registry).decode()
    return "".join(line for line in text.splitlines(True) if "_created" not in line)


def test_metric_names_reads_identifiers_not_label_values_or_functions() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, route) (rate(lb_request_duration_seconds_bucket"
        '{route=~"lb_fake.*", job="lb"}[$__rate_interval])))'
        ' / on() group_left sum(rate(lb_requests_total{code=~"5.."}[5m])) > 0.05'
        " and lb_redis_up == 0 and rate(lb_queue_jobs_total{outcome='dead'}[10m])"
    )
    assert metric_names(expr) == {
        "lb_request_duration_seconds_bucket",
        "lb_requests_total",
        "lb_redis_up",
        "lb_queue_jobs_total",
    }
    assert metric_names("label_values(lb_server_up, pool)") == {"lb_server_up"}
    assert metric_names('sum(up{job="lb"})') == set()


def test_a_name_lb_does_not_export_is_caught() -> None:
    exported = sample_names(_exposition())
    assert {"lb_requests_total", "lb_request_duration_seconds_bucket", "lb_redis_up"} <= exported
    used = {
        "lb_requests_total",  # right
        "lb_request_duration_seconds_count",  # right
        "lb_requests",  # the Counter's name, but Prometheus stores lb_requests_total
        "lb_requests_bucket",  # a Counter has no buckets
        "lb_request_duration_seconds",  # a Histogram has no series of its bare name
        "lb_reqests_total",  # a typo
    }
    assert missing(used, exported) == {
        "lb_requests": "exported as lb_requests_total",
        "lb_requests_bucket": "exported as lb_requests_total",
        "lb_request_duration_seconds": (
            "exported as lb_request_duration_seconds_bucket, lb_request_duration_seconds_count,"
            " lb_request_duration_seconds_sum"
        ),
        "lb_reqests_total": "not exported",
    }


# The files' shapes -------------------------------------------------------------------------

_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def test_dashboard_is_importable_json_with_unique_panel_ids(tmp_path: Path) -> None:
    dashboard = load_dashboard()
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    panels = list(all_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    assert all(isinstance(i, int) for i in ids)
    for panel in panels:
        assert panel.get("title"), panel
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert metric_names(target["expr"]), (panel["title"], target["expr"])
            assert _balanced(target["expr"]), (panel["title"], target["expr"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"]["uid"] == "${DS_PROMETHEUS}", var["name"]
    # Every variable a query uses is defined (Grafana's own ones aside).
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    for expr in dashboard_exprs(dashboard):
        for var in re.findall(r"\$\{?(\w+)", expr):
            assert var.startswith("__") or var in defined, (var, expr)
    if shutil.which("promtool") is not None:  # it parses PromQL: each query as a rule
        queries = [
            {"record": f"lb:dashboard:{i}", "expr": _unvariabled(t["expr"])}
            for i, t in enumerate(t for p in panels for t in p.get("targets", []))
        ]
        rules = tmp_path / "dashboard-rules.yml"
        rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": queries}]}))
        result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True)
        assert result.returncode == 0, result.stdout + result.stderr


def _unvariabled(expr: str) -> str:
    """A dashboard query as plain PromQL: Grafana's variables replaced by values."""
    return re.sub(r'"\$\w+"', '".*"', expr.replace("$__rate_interval", "5m"))


def test_alert_rules_are_a_prometheus_rule_file() -> None:
    rules_file = load_alerts()
    assert set(rules_file) == {"groups"}
    names = [g["name"] for g in rules_file["groups"]]
    assert len(names) == len(set(names))
    alerts = []
    for group in rules_file["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group["name"]
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            alerts.append(rule["alert"])
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), rule["alert"]
            assert metric_names(rule["expr"]), rule["alert"]
            assert _balanced(rule["expr"]), rule["alert"]
            assert _DURATION.match(rule["for"]), rule["alert"]
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
            annotations = rule["annotations"]
            assert len(annotations["summary"]) > 10, rule["alert"]
            assert len(annotations["description"]) > 40, rule["alert"]
    assert len(alerts) == len(set(alerts)), alerts
    if shutil.which("promtool") is not None:  # Debian's `prometheus` package has it
        result = subprocess.run(
            ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def _balanced(expr: str) -> bool:
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in closing and (not stack or stack.pop() != closing[char]):
            return False
    return not stack


# Against a live /metrics -------------------------------------------------------------------


def config_yaml(
    origins: list[Origin], *, port: int, tcp_port: int, admin_port: int, redis: str | None
) -> str:
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]  # nobody listens: 502s, retries
    a, b, c = (o.address for o in origins)
    scope = "shared" if redis else "local"
    text = f"""version: 1
defaults: {{shutdown_grace: 2s}}
listeners:
  web: {{bind: "127.0.0.1:{port}", mode: http}}
  raw: {{bind: "127.0.0.1:{tcp_port}", mode: tcp, pool: tcp}}
routes:
  - name: products
    match: {{path_prefix: /products}}
    pool: app
    cache: {{default_ttl: 60s}}
  - name: limited
    match: {{path_prefix: /limited}}
    pool: app
    rate_limit: {{rate: 1/h, burst: 1, key: route, scope: {scope}}}
  - name: reports
    match: {{path_prefix: /reports/}}
    pool: app
    offload: {{queue: reports}}
  - name: canary
    match: {{path_prefix: /canary}}
    split: [{{pool: app, weight: 9}}, {{pool: v2, weight: 1}}]
    force: {{header: x-canary, arms: {{"1": v2}}}}
    rollback: {{max_error_rate: 10%, min_requests: 5, window: 60s}}
  - name: broken
    match: {{path_prefix: /broken}}
    pool: broken
  - name: default
    match: {{}}
    pool: app
pools:
  app:
    servers:
      - {{address: "{a}", max_connections: 20}}
      - {{address: "{b}", max_connections: 20}}
  v2: {{servers: [{{address: "{dead[0]}"}}]}}
  broken: {{servers: [{{address: "{dead[0]}"}}, {{address: "{dead[1]}"}}]}}
  tcp: {{servers: [{{address: "{c}"}}]}}
queues:
  reports: {{job_timeout: 2s, ack_timeout: 3s, backoff: {{base: 50ms, max: 100ms}}}}
admin: {{bind: "127.0.0.1:{admin_port}"}}
access_log: {{enabled: false}}
"""
    if redis:
        text += f'redis: {{url: "{redis}", timeout: 200ms, probe_interval: 100ms}}\n'
    return text


@contextlib.contextmanager
def busy_lb(tmp_path: Path, redis: str | None) -> Iterator[LbProcess]:
    """An lb on `config_yaml`, after traffic on every route and the tcp listener."""
    with contextlib.ExitStack() as stack:
        origins = [stack.enter_context(Origin(name)) for name in ("a", "b", "c")]
        port, tcp_port, admin_port = free_port(), free_port(), free_port()
        path = tmp_path / ("redis.yaml" if redis else "local.yaml")
        path.write_text(
            config_yaml(origins, port=port, tcp_port=tcp_port, admin_port=admin_port, redis=redis)
        )
        lb = stack.enter_context(LbProcess(path, port, admin_port, workers=1))
        for _ in range(3):
            assert request(port, "/products/1")[0] == 200  # MISS, then HIT
            assert request(port, "/")[0] == 200
        assert {request(port, f"/limited/{i}")[0] for i in range(4)} == {200, 429}
        for _ in range(6):
            assert request(port, "/canary", headers={"x-canary": "1"})[0] >= 500
            assert request(port, "/canary")[0] in (200, 502, 503)
        assert request(port, "/broken")[0] >= 500
        status, headers, _ = request(port, "/reports/x", method="POST", body=b"{}")
        assert status == 202, status
        if redis is None:  # the job runs in lb's worker: wait for its result
            wait_for(
                lambda: request(port, headers["location"])[0] == 200,
                what="the offloaded job's result",
            )
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as sock:
            sock.sendall(b"GET /tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"origin c /tcp" in b"".join(iter(lambda: sock.recv(65536), b""))
        yield lb


def families_seen(exposition: str) -> set[str]:
    return {family(name) for name in sample_names(exposition)}


def test_every_metric_the_dashboard_and_alerts_name_is_exported(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    from lb import metrics

    declared = {
        m._name for m in vars(metrics).values() if isinstance(m, Counter | Gauge | Histogram)
    } | {"lb_redis_up"}
    with busy_lb(tmp_path, redis_server.url) as shared, busy_lb(tmp_path, None) as local:
        # Counters are flushed a few times a second: wait until every family lb declares has
        # samples in the two lbs together (a family left out would hide a wrong name).
        def exported() -> set[str]:
            return sample_names(shared.metrics()) | sample_names(local.metrics())

        wait_for(
            lambda: declared <= {family(n) for n in exported()},
            what=lambda: (
                f"every family; missing {sorted(declared - {family(n) for n in exported()})}"
            ),
        )
        names = exported()
        assert "lb_redis_up" in sample_names(shared.metrics())
        assert get_json(shared.admin_port, "/api/v1/status")["redis"]["up"] is True

    used_by_dashboard = {n for e in dashboard_exprs(load_dashboard()) for n in metric_names(e)}
    used_by_alerts = {n for r in alert_rules(load_alerts()) for n in metric_names(r["expr"])}
    assert used_by_dashboard and used_by_alerts
    assert missing(used_by_dashboard, names) == {}, "the dashboard names metrics lb lacks"
    assert missing(used_by_alerts, names) == {}, "the alert rules name metrics lb lacks"
    # ...and the dashboard shows every family lb exports.
    shown = {family(n) for n in used_by_dashboard}
    assert declared - shown == set(), "families the dashboard does not show"
