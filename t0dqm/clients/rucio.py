"""The Rucio side of Tier-0 placement, through rucio-clients: blocks, replicas and rules.

Every call is idempotent: an existing container, block, attachment, replica or rule is found and reused,
never duplicated. Errors come out as two kinds:
- ``RucioUnavailable`` (a ConnectionError, so the tasks retry it with back-off): the server does not
  answer, times out, or answers 5xx;
- ``RucioRefused``: Rucio said no (quota, permission, invalid name, a file registered with another size
  or checksum); retrying does not help, the caller records the reason and alarms.
A rule that does not exist reads as ``None`` (``rule``), never as an error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 1000  # Rucio accepts at most 1000 DIDs per call
COMMENT = "t0dqm Tier-0 placement"


class RucioUnavailable(ConnectionError):
    """The Rucio server did not answer properly; retry later."""


class RucioRefused(RuntimeError):
    """Rucio refused the request; the message says why."""


def configured(settings: Any) -> bool:
    """True when a Rucio server is configured (``rucio.url``)."""
    return bool(settings.rucio.url)


def _creds(cfg: Mapping[str, Any]) -> dict[str, str]:
    kind = cfg["auth_type"]
    if kind == "userpass":
        return {"username": cfg["username"], "password": cfg["password"]}
    if kind == "x509":
        return {"client_cert": cfg["client_cert"], "client_key": cfg["client_key"] or cfg["client_cert"]}
    if kind == "x509_proxy":
        return {"client_proxy": cfg["client_cert"]}
    return {}


def _translate(exc: BaseException) -> BaseException:
    import requests
    from rucio.common import exception as rex

    if isinstance(
        exc, (rex.ServerConnectionException, requests.RequestException, TimeoutError, ConnectionError)
    ):
        return RucioUnavailable(f"Rucio server unreachable: {exc}")
    if isinstance(exc, (rex.DatabaseException, rex.ServiceUnavailable)):
        return RucioUnavailable(f"Rucio server error: {' '.join(str(exc).split())}")
    if isinstance(exc, rex.CannotAuthenticate):
        return RucioRefused(f"cannot authenticate to Rucio: {str(exc).splitlines()[-1]}")
    if isinstance(exc, rex.RucioException):
        text = " ".join(str(exc).split())
        return RucioRefused(f"{type(exc).__name__}: {text}")
    return exc


class RucioGateway:
    """One Rucio account's view: the calls placement needs, each idempotent."""

    def __init__(self, cfg: Mapping[str, Any], timeout: float) -> None:
        self.cfg = dict(cfg)
        self.timeout = timeout
        self.scope = cfg["scope"]
        self.account = cfg["account"] or (cfg["username"] if cfg["auth_type"] == "userpass" else "")
        self._client: Any = None

    def _connect(self) -> Any:
        if self._client is None:
            from rucio.client import Client

            cfg = self.cfg
            self._client = Client(
                rucio_host=cfg["url"],
                auth_host=cfg["auth_url"] or cfg["url"],
                account=self.account or None,
                ca_cert=cfg["ca_cert"] or None,
                auth_type=cfg["auth_type"],
                creds=_creds(cfg),
                timeout=self.timeout,
                user_agent="t0dqm",
            )
            self.account = self._client.account
        return self._client

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)`` with the errors translated."""
        try:
            return fn(self._connect())
        except Exception as exc:
            translated = _translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    # -- data identifiers ------------------------------------------------------------------------
    def ensure_block(self, container: str, block: str, files: list[dict[str, Any]], rse: str) -> int:
        """Container, block inside it, the files' replicas at ``rse`` and their attachment to the block.

        ``files``: [{"name": lfn, "bytes": n, "adler32": hex}]. Returns how many files were attached now.
        """
        from rucio.common import exception as rex

        scope = self.scope
        dids = [
            {"scope": scope, "name": f["name"], "bytes": int(f["bytes"]), "adler32": f["adler32"]}
            for f in files
        ]
        for add in (lambda c: c.add_container(scope, container), lambda c: c.add_dataset(scope, block)):
            try:
                self.call(add)
            except RucioRefused as exc:
                if not isinstance(exc.__cause__, rex.DataIdentifierAlreadyExists):
                    raise
        try:
            self.call(lambda c: c.attach_dids(scope, container, [{"scope": scope, "name": block}]))
        except RucioRefused as exc:
            if not isinstance(exc.__cause__, rex.DuplicateContent):
                raise
        for chunk in _chunks(dids):

            def add_replicas(c: Any, chunk: list[dict[str, Any]] = chunk) -> Any:
                return c.add_replicas(rse, chunk)

            self.call(add_replicas)
        attached = 0
        for _attempt in range(3):
            present = {f["name"] for f in self.call(lambda c: list(c.list_files(scope, block)))}
            missing = [{"scope": scope, "name": d["name"]} for d in dids if d["name"] not in present]
            if not missing:
                return attached
            try:
                for chunk in _chunks(missing):

                    def attach(c: Any, chunk: list[dict[str, Any]] = chunk) -> Any:
                        return c.attach_dids(scope, block, chunk)

                    self.call(attach)
                    attached += len(chunk)
                return attached
            except RucioRefused as exc:  # attached concurrently: list again
                if not isinstance(exc.__cause__, (rex.FileAlreadyExists, rex.DuplicateContent)):
                    raise
        raise RucioUnavailable(f"could not attach the files of {block}: too much contention")

    # -- rules -----------------------------------------------------------------------------------
    def find_rule(self, name: str, rse: str) -> dict[str, Any] | None:
        """Our single-copy rule on ``name`` to exactly ``rse``, if any."""
        rules = self.call(lambda c: list(c.list_did_rules(self.scope, name)))
        for rule in rules:
            if rule["rse_expression"] == rse and rule["account"] == self.account and int(rule["copies"]) == 1:
                return rule
        return None

    def add_rule(self, name: str, rse: str, activity: str, priority: int = 3) -> tuple[str, bool]:
        """Find or create the rule (no lifetime); returns (rule id, created now)."""
        from rucio.common import exception as rex

        existing = self.find_rule(name, rse)
        if existing is not None:
            return existing["id"], False
        try:
            ids = self.call(
                lambda c: c.add_replication_rule(
                    [{"scope": self.scope, "name": name}],
                    1,
                    rse,
                    lifetime=None,
                    activity=activity,
                    priority=priority,
                    grouping="DATASET",
                    comment=COMMENT,
                )
            )
            return ids[0], True
        except RucioRefused as exc:
            if not isinstance(exc.__cause__, rex.DuplicateRule):
                raise
        existing = self.find_rule(name, rse)  # created concurrently
        if existing is None:
            raise RucioUnavailable(f"rule on {name} to {rse} reported duplicate but not found")
        return existing["id"], False

    def rule(self, rule_id: str) -> dict[str, Any] | None:
        """The rule, or None when Rucio has no rule with this id."""
        from rucio.common import exception as rex

        try:
            return self.call(lambda c: c.get_replication_rule(rule_id))
        except RucioRefused as exc:
            if isinstance(exc.__cause__, rex.RuleNotFound):
                return None
            raise

    def delete_rule(self, rule_id: str) -> bool:
        """Delete the rule (Rucio's reaper then removes replicas no other rule holds); False if gone."""
        from rucio.common import exception as rex

        try:
            self.call(lambda c: c.delete_replication_rule(rule_id, purge_replicas=False))
            return True
        except RucioRefused as exc:
            if isinstance(exc.__cause__, rex.RuleNotFound):
                return False
            raise


def _chunks(items: list[T], size: int = CHUNK) -> Iterable[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


_local = threading.local()


def gateway(settings: Any) -> RucioGateway:
    """The process's (and thread's) gateway for the configured Rucio server; RucioRefused when none."""
    cfg = settings.rucio
    if not cfg.url:
        raise RucioRefused("no Rucio server configured (rucio.url)")
    key = tuple(sorted((k, str(v)) for k, v in cfg.items()))
    cached = getattr(_local, "gateways", None)
    if cached is None:
        cached = _local.gateways = {}
    gw = cached.get(key)
    if gw is None:
        gw = cached[key] = RucioGateway(cfg, float(cfg.timeout))
    return gw
