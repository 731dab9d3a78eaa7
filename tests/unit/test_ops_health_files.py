"""ops/ files for monitoring: the alert rules load as YAML and use only metrics that exist; the Grafana
dashboard is valid JSON over those metrics; the runbook covers every health alarm family."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from t0dqm.policies import health

ROOT = Path(__file__).resolve().parents[2]
T0DQM_METRICS = {
    "t0dqm_queue_depth",
    "t0dqm_files",
    "t0dqm_files_index",
    "t0dqm_archives",
    "t0dqm_archived_bytes",
    "t0dqm_quota_used_bytes",
    "t0dqm_quota_bytes",
    "t0dqm_quota_use_ratio",
    "t0dqm_alarms_active",
    "t0dqm_quarantined",
    "t0dqm_tasks_total",
    "t0dqm_task_seconds_total",
    "t0dqm_beat_heartbeat_age_seconds",
    "t0dqm_oldest_waiting_seconds",
    "t0dqm_broker_up",
    "t0dqm_catalog_up",
    "t0dqm_scrape_seconds",
}
FLOWER_METRICS = {
    "flower_worker_online",
    "flower_worker_number_of_currently_executing_tasks",
    "flower_task_runtime_seconds_bucket",
    "flower_events_total",
    "flower_worker_prefetched_tasks",
}
RX_METRIC = re.compile(r"\b((?:t0dqm|flower)_[a-z_]+)\b")


def _names(expr: str) -> set[str]:
    return set(RX_METRIC.findall(expr))


def test_alert_rules_load_and_use_known_metrics() -> None:
    data = yaml.safe_load((ROOT / "ops/prometheus/alert-rules.yml").read_text())
    rules = [r for g in data["groups"] for r in g["rules"]]
    assert len(rules) >= 10
    runbook = (ROOT / "ops/runbook.md").read_text()
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] in ("warning", "critical")
        assert _names(rule["expr"]) <= T0DQM_METRICS | FLOWER_METRICS, rule["alert"]
        anchor = rule["annotations"]["runbook"].partition("#")[2]
        if anchor:
            headings = {
                re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^## (.+)$", runbook, re.MULTILINE)
            }
            assert anchor in headings, (rule["alert"], anchor)


def test_metric_names_match_the_exporter(tmp_path: Path) -> None:
    from t0dqm.servers import metrics

    documented = set(RX_METRIC.findall(metrics.__doc__ or ""))
    assert documented == T0DQM_METRICS


def test_dashboard_is_valid_and_uses_known_metrics() -> None:
    dash = json.loads((ROOT / "ops/grafana/t0dqm-dashboard.json").read_text())
    assert dash["uid"] and dash["panels"]
    used = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= _names(target["expr"])
    assert used <= T0DQM_METRICS | FLOWER_METRICS
    assert {
        "t0dqm_queue_depth",
        "t0dqm_files",
        "t0dqm_archived_bytes",
        "t0dqm_quota_use_ratio",
        "t0dqm_alarms_active",
        "flower_worker_online",
    } <= used


def test_runbook_covers_every_health_family() -> None:
    runbook = (ROOT / "ops/runbook.md").read_text()
    for family in (
        "broker",
        "queue:<queue>",
        "backlog:<queue>",
        "beat",
        "latency:<step>",
        "collector:<host>",
        "quarantine",
    ):
        assert f"## {health.PREFIX}{family}\n" in runbook, family
    for other in ("archive:trouble", "zip:file:<id>", "index-merge-failed", "quota:<class>"):
        assert f"## {other}\n" in runbook
