"""The typed configuration: defaults as before the models, sources and their priority, unknown keys refused,
and every key read somewhere (a key nobody reads is a default that silently does nothing)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from t0dqm import config
from t0dqm.formats import naming
from t0dqm.policies import health as health_policy

GiB = 1 << 30
REPO = Path(__file__).resolve().parents[2]

# config.DEFAULTS as it was before the pydantic models (commit b33ce63), frozen here on purpose.
FROZEN_DEFAULTS: dict[str, Any] = {
    "flavour": "dev",
    "root": "./t0dqm-data",
    "broker_url": "",
    "result_backend": "",
    "catalog_url": "",
    "archive_endpoint": "",
    "queue_prefix": "",
    "host": "",
    "timeouts": {"io": 60, "copy": 1800, "root_check": 30, "http": 30},
    "tasks": {
        "soft_time_limit": 600,
        "time_limit": 660,
        "long_soft_time_limit": 3600,
        "long_time_limit": 3700,
        "max_retries": 6,
        "retry_backoff_max": 600,
    },
    "reconcile": {
        "lease_seconds": 900,
        "stale_seconds": 600,
        "interval": 20,
        "queued_ttl": 3600,
        "orphan_grace": 60,
    },
    "heartbeat": {"interval": 5, "stale_after": 20, "leader_lease": 30},
    "archive": {
        "max_zip_bytes": int(1.99 * GiB),
        "freeze_age": 7 * 86400,
        "verify_delay": 86400,
        "stage_max_tries": 6,
        "require_tape": False,
        "index_backups_kept": 7,
        "retry_base": 300,
        "retry_cap": 86400,
        "zip_lease": 600,
    },
    "health": {},
    "receive": {"scan_interval": 5, "batch": 200},
    "quota": {
        "online_data": 1000 * GiB,
        "offline_data": 2500 * GiB,
        "relval_data": 100 * GiB,
        "relval_mc": 70 * GiB,
        "relval_rundepmc": 70 * GiB,
        "simulated": 10 * GiB,
        "simulated_rundep": 10 * GiB,
    },
    "deletion": {"require_verified": True, "dry_run": False, "extra_roots": []},
    "producers": [],
    "sync": {"url": "", "dest": "OnlineData/original", "connections": 5, "cert": "", "key": "", "ca": ""},
    "mirror": {"dest": "", "quota": 0, "folders": {}},
    "run_deletion": {
        "enabled": False,
        "max_age_days": 730,
        "rules": [
            {"type": "COLLISIONS", "keep_days": 730, "min_lumis": 0},
            {"type": "COSMICS", "keep_days": 180, "min_lumis": 50},
            {"type": "COSMICS", "keep_days": 90, "min_lumis": 25},
            {"type": "COSMICS", "keep_days": 30, "min_lumis": 0},
            {"type": "TEST", "keep_days": 20, "min_lumis": 100},
            {"type": "TEST", "keep_days": 10, "min_lumis": 25},
            {"type": "TEST", "keep_days": 1, "min_lumis": 0},
        ],
    },
    "streamer": {
        "enabled": False,
        "quota_bytes": 750 * 10**12,
        "dump": "",
        "base": "",
        "done_url": "",
        "skip_runs_file": "",
        "max_dump_age": 48 * 3600,
        "transfertest_days": 7,
        "age_days": 365,
    },
    "retention": {"enabled": False, "min_days": 7},
    "subscriptions": {
        "default_site": "T1_US_FNAL",
        "t0_disk": "T0_CH_CERN_Disk",
        "sites": {},
        "disk_tiers": [],
        "free_tape": {},
    },
    "rucio": {
        "url": "",
        "auth_url": "",
        "account": "",
        "auth_type": "userpass",
        "username": "",
        "password": "",
        "client_cert": "",
        "client_key": "",
        "ca_cert": "",
        "scope": "cms",
        "activity": "T0 Export",
        "tape_activity": "T0 Tape",
        "priority": 4,
        "timeout": 60,
        "poll_interval": 600,
        "stuck_alarm_after": 6 * 3600,
    },
    "storage_manager": {"enabled": False, "listing": "", "area": ""},
    "alarms": {
        "min_interval": 3600,
        "email_to": "",
        "email_from": "",
        "smtp_host": "",
        "sound": False,
        "webhook_url": "",
        "sound_file": "",
        "latency_seconds": 5 * 3600,
    },
    "gui": {
        "register_url": "",
        "online_dataset": "/Global/Online/ALL",
        "online_subsystem_dataset": "/Global/Online/{subsystem}",
        "file_prefix": "",
        "batch": 100,
        "check_readable": True,
        "timeout": 0,
        "retry_base": 5,
        "retry_cap": 600,
        "cert": "",
        "key": "",
        "ca": "",
    },
    "flower": {"address": "127.0.0.1", "port": 5555, "basic_auth": ""},
    "broker_ssl": {"cert_reqs": "required", "ca_certs": "", "certfile": "", "keyfile": ""},
    "metrics": {"address": "127.0.0.1", "port": 9808, "timeout": 30, "max_connections": 64, "max_scrapes": 4},
    "upload": {
        "host": "127.0.0.1",
        "port": 8060,
        "max_size": 8 << 30,
        "timeout": 30,
        "max_uploads": 64,
        "max_connections": 1024,
        "cert": "",
        "key": "",
        "ca": "",
        "allowed_dns": "",
    },
}

# Keys that were read with a default at the call site (settings.data.get(...), table.get(key, default)) and
# were missing from DEFAULTS: the values those call sites used.
CALL_SITE_DEFAULTS: dict[str, Any] = {
    "health": dict(health_policy.DEFAULTS),  # tasks/health.py: {**policy.DEFAULTS, **health}
    "receive": {"per_task": 25},  # tasks/receive.py PER_TASK
    "sync": {"suffixes": [".root"]},
    "beat": {"every": {}},  # beat.py: .get("every", {}); enabled unset = every optional entry
}


def _leaves(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _at(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize(("key", "value"), [kv for kv in _leaves(FROZEN_DEFAULTS) if kv[0] != "health"])
def test_default_unchanged(key: str, value: Any) -> None:
    got = _at(config.DEFAULTS, key)
    assert got == value and type(got) is type(value), key
    assert _at(config.load(None, environ={}).data, key) == value


def test_defaults_of_call_sites_moved_into_the_models() -> None:
    for key, value in _leaves(CALL_SITE_DEFAULTS):
        assert _at(config.DEFAULTS, key) == value, key
    assert "enabled" not in config.DEFAULTS["beat"]
    settings = config.load(None, environ={})
    assert settings.beat.enabled is None and settings.run_deletion.dry_run is None
    assert settings["run_deletion"].get("dry_run", "unset") == "unset"  # absent from the dump, as before
    assert settings.producers == [] and settings.mirror.folders == {}


def test_no_other_keys_than_before_plus_the_call_site_ones() -> None:
    known = {k for k, _ in _leaves(FROZEN_DEFAULTS)} | {k for k, _ in _leaves(CALL_SITE_DEFAULTS)}
    assert {k for k, _ in _leaves(config.DEFAULTS)} - known == set()


# -- sources ---------------------------------------------------------------------------------------------


def test_toml_then_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        'flavour = "offline"\n[quota]\nonline_data = 5\noffline_data = 6\n'
        '[beat.every]\nzip_freeze = 2\n[[producers]]\nhost = "p1"\ndir = "/d"\n'
    )
    s = config.load(
        cfg,
        environ={
            "T0DQM_QUOTA__OFFLINE_DATA": "7",
            "T0DQM_ROOT": str(tmp_path),
            "T0DQM_DELETION__DRY_RUN": "on",
            "T0DQM_TIMEOUTS__IO": "1e2",
        },
    )
    assert s.source == str(cfg)
    assert s.flavour == "offline" and s.root == tmp_path
    assert s.quota.online_data == 5 and s["quota"]["online_data"] == 5  # TOML
    assert s.quota.offline_data == 7 and s["quota"]["offline_data"] == 7  # environment beats TOML
    assert s.quota.relval_mc == 70 * GiB  # default
    assert s.deletion.dry_run is True and s.timeout("io") == 100
    assert s.beat.every == {"zip_freeze": 2}
    assert s.producers[0].host == "p1" and s.data["producers"] == [{"host": "p1", "dir": "/d"}]


def test_config_file_from_environ(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text("[receive]\nbatch = 9\n")
    s = config.load(None, environ={"T0DQM_CONFIG": str(cfg)})
    assert s.receive.batch == 9 and s.source == str(cfg)


def test_explicit_environ_is_the_only_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T0DQM_QUOTA__ONLINE_DATA", "-1")
    monkeypatch.setenv("T0DQM_NO_SUCH_KEY", "1")
    assert config.load(None, environ={}).quota.online_data == 1000 * GiB
    with pytest.raises(config.ConfigError, match="T0DQM_NO_SUCH_KEY"):
        config.load()


def test_json_for_whole_tables_and_lists_in_the_environment() -> None:
    s = config.load(
        None,
        environ={
            "T0DQM_PRODUCERS": '[{"host": "a", "dir": "/x", "done": "/y"}]',
            "T0DQM_BEAT__ENABLED": '["reconcile"]',
            "T0DQM_HEALTH__QUEUES": '["ops"]',
        },
    )
    assert s.producers[0].done == "/y" and s.beat.enabled == ["reconcile"] and s.health.queues == ["ops"]


def test_a_list_in_the_environment_that_is_not_json() -> None:
    with pytest.raises(config.ConfigError, match="T0DQM_DELETION__EXTRA_ROOTS: tables and lists are JSON"):
        config.load(None, environ={"T0DQM_DELETION__EXTRA_ROOTS": "/a"})
    assert config.load(None, environ={"T0DQM_DELETION__EXTRA_ROOTS": '["/a"]'}).deletion.extra_roots == ["/a"]


def test_non_config_variables_are_ignored() -> None:
    s = config.load(None, environ={"T0DQM_RUCIO_VENV": "/x", "T0DQM_TEST_PG": "postgresql://", "HOME": "/"})
    assert s.data == config.DEFAULTS


# -- unknown keys and validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("colour = 1\n", "colour is not a configuration key"),
        ("[archive]\nmax_zip = 1\n", "archive.max_zip is not a configuration key"),
        ("[no_table]\nx = 1\n", "no_table is not a configuration key"),
        ("[quota]\nonline_dat = 5\n", "quota.online_dat is not a file class"),
        (
            '[[producers]]\nhost = "a"\ndir = "/d"\nfolder = "/e"\n',
            "producers[0].folder is not a configuration key",
        ),
        ("[beat]\nevery_s = {}\n", "beat.every_s is not a configuration key"),
    ],
)
def test_unknown_key_in_toml(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(toml)
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load(cfg, environ={})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("T0DQM_COLOUR", "T0DQM_COLOUR: colour is not a configuration key"),
        ("T0DQM_ARCHIVE__MAX_ZIP", "archive.max_zip is not a configuration key (known: max_zip_bytes"),
        ("T0DQM_QUOTA__ONLINE_DAT", "quota.online_dat is not a file class"),
    ],
)
def test_unknown_key_in_environment(name: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(message)) as err:
        config.load(None, environ={name: "1"})
    assert name in str(err.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"T0DQM_QUOTA__ONLINE_DATA": "-5"},
            "quota.online_data must be a positive integer number of bytes, got -5",
        ),
        ({"T0DQM_TIMEOUTS__COPY": "0"}, "timeouts.copy must be a number >= 1, got 0"),
        ({"T0DQM_TIMEOUTS__IO": "soon"}, "timeouts.io must be a number >= 1, got 'soon'"),
        ({"T0DQM_DELETION__DRY_RUN": "maybe"}, "deletion.dry_run must be true or false, got 'maybe'"),
        (
            {"T0DQM_FLAVOUR": "prod"},
            "flavour must be one of ('online', 'offline', 'relval', 'dev'), got 'prod'",
        ),
        (
            {"T0DQM_HEARTBEAT__STALE_AFTER": "6"},
            "heartbeat.stale_after must be at least twice heartbeat.interval",
        ),
        ({"T0DQM_TASKS__SOFT_TIME_LIMIT": "700"}, "tasks.soft_time_limit must be below tasks.time_limit"),
        ({"T0DQM_RUCIO__PRIORITY": "9"}, "rucio.priority must be 1 to 5, got 9"),
        ({"T0DQM_ARCHIVE__MAX_ZIP_BYTES": "0"}, "archive.max_zip_bytes must be positive"),
        (
            {"T0DQM_ALARMS__WEBHOOK_URL": "file:///etc/passwd"},
            "alarms.webhook_url must be an http:// or https:// URL, got 'file:///etc/passwd'",
        ),
        (
            {"T0DQM_SYNC__URL": "ftp://online"},
            "sync.url must be an http:// or https:// URL, got 'ftp://online'",
        ),
        (
            {"T0DQM_RUCIO__URL": "/var/rucio"},
            "rucio.url must be an http:// or https:// URL, got '/var/rucio'",
        ),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load(None, environ=env)


def test_free_tape_is_whole_bytes(tmp_path: Path) -> None:
    """TOML's 1.5e15 is a float: taken when it is a whole number of bytes, as policies.placement.plan wants."""
    cfg = tmp_path / "t.toml"
    cfg.write_text("[subscriptions.free_tape]\nT1_US_FNAL = 1.5e15\nT1_IT_CNAF = 2000\n")
    free = config.load(cfg, environ={}).subscriptions.free_tape
    assert free == {"T1_US_FNAL": 1_500_000_000_000_000, "T1_IT_CNAF": 2000}
    assert all(type(v) is int for v in free.values())
    for bad in ("0.5", "-1", '"lots"'):
        cfg.write_text(f"[subscriptions.free_tape]\nT1_US_FNAL = {bad}\n")
        with pytest.raises(
            config.ConfigError, match="free_tape.T1_US_FNAL must be an integer number of bytes >= 0"
        ):
            config.load(cfg, environ={})


def test_toml_values_are_not_coerced_from_text(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[deletion]\ndry_run = "yes"\n')
    with pytest.raises(config.ConfigError, match="deletion.dry_run must be true or false, got 'yes'"):
        config.load(cfg, environ={})


def test_settings_from_data_validates_and_fills_defaults() -> None:
    base = config.load(None, environ={})
    s = config.Settings(data=dict(base.data, sync={"url": "http://x"}), source="here")
    assert s.sync.url == "http://x" and s.sync.connections == 5 and s["sync"]["suffixes"] == [".root"]
    assert s.source == "here" and config.Settings(data=base.data) == base
    with pytest.raises(config.ConfigError, match="sync.conections is not a configuration key"):
        config.Settings(data=dict(base.data, sync={"conections": 2}))


def test_tables_read_as_mappings_too() -> None:
    s = config.load(None, environ={})
    assert s.quota["online_data"] == s.quota.online_data and dict(s.deletion) == s.data["deletion"]
    assert {**s.health}["max_items"] == 500 and s.run_deletion.get("dry_run", True) is True
    assert s.run_deletion.rules[0]["type"] == "COLLISIONS"


# -- every key is read somewhere ---------------------------------------------------------------------------

SOURCES = {p: p.read_text() for p in (REPO / "t0dqm").rglob("*.py") if p != REPO / "t0dqm" / "config.py"}


def _model_leaves(model: type[BaseModel], parent: str | None = None) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for name, info in model.model_fields.items():
        args = getattr(info.annotation, "__args__", ()) or (info.annotation,)
        sub = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        out += _model_leaves(sub[0], name) if sub else [(parent, name)]
    return out


def _read(parent: str | None, name: str) -> bool:
    """Some module (config.py aside) names the key (``["name"]``, ``.name``, ``.get("name"``, ``"name"`` in a
    tuple of keys) and its table (``timeouts``: ``settings.timeout("name")``)."""
    n = re.escape(name)
    key = re.compile(rf'\["{n}"\]|(?<!self)\.{n}\b|\.get\(\s*"{n}"|[(,\[]\s*"{n}"\s*[,)\]]')
    table = (
        re.compile(r"\.timeout\(" if parent == "timeouts" else rf"\b{re.escape(parent)}\b")
        if parent
        else None
    )
    if parent == "timeouts":
        key = re.compile(rf'\.timeout\("{n}"\)')
    return any(key.search(text) and (table is None or table.search(text)) for text in SOURCES.values())


@pytest.mark.parametrize(
    ("parent", "name"), [leaf for leaf in _model_leaves(config.Config) if leaf[0] != "quota"]
)
def test_every_key_is_read(parent: str | None, name: str) -> None:
    assert _read(parent, name), f"{parent + '.' if parent else ''}{name} is never read outside config.py"


def test_quota_is_read_whole_by_file_class() -> None:
    classes = {
        getattr(naming, c)
        for c in (
            "ONLINE_DATA",
            "OFFLINE_DATA",
            "RELVAL_DATA",
            "RELVAL_MC",
            "RELVAL_RUNDEPMC",
            "SIMULATED",
            "SIMULATED_RUNDEP",
        )
    }
    assert set(config.Quota.model_fields) == classes
    assert any(re.search(r'\["quota"\]\.items\(\)|\.quota\.items\(\)', text) for text in SOURCES.values())
