"""Deployment files: the compose file validates offline and keeps its safety settings."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package) is installed by `make test`"
    return subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True,
                          text=True, env=env, timeout=60, cwd=ROOT)


def test_compose_validates_with_flower_auth() -> None:
    result = compose_config({**os.environ, "T0DQM_FLOWER_AUTH": "ops:secret"})
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    services = doc["services"]
    assert {"redis", "postgres", "xrootd", "beat", "flower", "worker-index-merge"} <= set(services)
    assert "--basic-auth=ops:secret" in services["flower"]["command"]
    for name, svc in services.items():
        if name.startswith("worker-") or name in ("beat", "flower"):
            assert svc["environment"]["T0DQM_CATALOG_URL"].startswith("postgresql")


def test_compose_refuses_flower_without_auth() -> None:
    result = compose_config({k: v for k, v in os.environ.items() if k != "T0DQM_FLOWER_AUTH"})
    assert result.returncode != 0 and "T0DQM_FLOWER_AUTH" in result.stderr


def test_redis_conf_is_durable_and_never_evicts() -> None:
    lines = {line.split()[0]: line.split()[1:] for line in (ROOT / "ops/redis.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert lines["appendonly"] == ["yes"]
    assert lines["maxmemory-policy"] == ["noeviction"]


def test_worker_roles_merge_is_single_writer() -> None:
    args = (ROOT / "workers/index-merge.args").read_text().split()
    assert args[args.index("-c") + 1] == "1"
    assert args[args.index("-Q") + 1] == "index-merge"
