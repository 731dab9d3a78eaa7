"""Alarm notification: one notifier interface over the catalog's ``alarms`` table.

Alarms are raised and cleared by :mod:`t0dqm.catalog.alarms`; :func:`dispatch_pending` (called by the health
task) sends every active alarm that is due, through every configured notifier, at most once per
``alarms.min_interval`` seconds per alarm key. The key is claimed with a conditional update of
``notified_at`` before sending, so two dispatchers never both send the same alarm.

Notifiers (settings ``alarms``): ``log`` (always), ``email`` (``smtp_host`` as host[:port], ``email_to``
comma-separated, ``email_from``), ``webhook`` (``webhook_url``: HTTP POST of a JSON object), ``sound``
(``sound = true`` or a ``sound_file``: plays the file with aplay/paplay, else speaks the message with
espeak-ng/espeak, else logs that no player exists).
"""

from __future__ import annotations

import json
import logging
import shutil
import smtplib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

from t0dqm import config
from t0dqm.catalog import alarms
from t0dqm.catalog.db import Catalog

log = logging.getLogger("t0dqm.notify")


@dataclass(frozen=True)
class Alarm:
    key: str
    severity: str
    message: str
    first_at: float
    last_at: float
    count: int
    active: bool = True
    notified_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def subject(self) -> str:
        return f"[t0dqm {self.severity}] {self.key}"


class Notifier(Protocol):
    name: str

    def send(self, alarm: Alarm) -> None:
        """Deliver one alarm; raise on failure."""


def is_due(alarm: Alarm, now: float, min_interval: float) -> bool:
    """Active, and never notified or last notified at least ``min_interval`` seconds ago (pure)."""
    return alarm.active and (alarm.notified_at is None or now - alarm.notified_at >= min_interval)


class LogNotifier:
    name = "log"

    def send(self, alarm: Alarm) -> None:
        level = logging.ERROR if alarm.severity == "critical" else logging.WARNING
        log.log(level, "ALARM %s (%s, x%d): %s", alarm.key, alarm.severity, alarm.count, alarm.message)


class EmailNotifier:
    name = "email"

    def __init__(self, host: str, to: Sequence[str], sender: str, timeout: float = 30) -> None:
        self.host, _, port = host.partition(":")
        self.port = int(port or 25)
        self.to, self.sender, self.timeout = list(to), sender, timeout

    def send(self, alarm: Alarm) -> None:
        msg = EmailMessage()
        msg["Subject"] = alarm.subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg.set_content(
            f"{alarm.message}\n\nkey: {alarm.key}\nseverity: {alarm.severity}\ncount: {alarm.count}\n"
            f"first: {time.ctime(alarm.first_at)}\nlast: {time.ctime(alarm.last_at)}\n"
            f"host: {socket.gethostname()}\n"
        )
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            smtp.send_message(msg)


class WebhookNotifier:
    name = "webhook"

    def __init__(self, url: str, timeout: float = 30, extra: dict[str, Any] | None = None) -> None:
        self.url, self.timeout, self.extra = url, timeout, extra or {}

    def send(self, alarm: Alarm) -> None:
        body = json.dumps(
            {**alarm.as_dict(), **self.extra, "text": f"{alarm.subject}: {alarm.message}"}
        ).encode()
        req = urllib.request.Request(  # noqa: S310 - operator-configured URL (alarms.webhook_url)
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "t0dqm-notify/1"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - the operator's URL
            if resp.status >= 300:
                raise OSError(f"webhook {self.url} answered {resp.status}")


PLAYERS = ("paplay", "aplay")
SPEAKERS = ("espeak-ng", "espeak")


class SoundNotifier:
    """Control-room sound: play ``sound_file``, else speak the message, else log that nothing can play."""

    name = "sound"

    def __init__(
        self, sound_file: str = "", which: Callable[[str], str | None] = shutil.which, timeout: float = 30
    ) -> None:
        self.sound_file, self.which, self.timeout = sound_file, which, timeout

    def command(self, alarm: Alarm) -> list[str] | None:
        if self.sound_file:
            for player in PLAYERS:
                path = self.which(player)
                if path:
                    return [path, self.sound_file]
        for speaker in SPEAKERS:
            path = self.which(speaker)
            if path:
                return [path, f"t0dqm {alarm.severity}: {alarm.message}"[:300]]
        return None

    def send(self, alarm: Alarm) -> None:
        cmd = self.command(alarm)
        if cmd is None:
            log.warning(
                "sound alarm for %s: no sound player (%s) or speech tool (%s) found",
                alarm.key,
                "/".join(PLAYERS),
                "/".join(SPEAKERS),
            )
            return
        subprocess.run(
            cmd, check=True, timeout=self.timeout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


def notifiers_from_settings(settings: config.Settings) -> list[Notifier]:
    cfg = settings.alarms
    timeout = settings.timeout("http")
    out: list[Notifier] = [LogNotifier()]
    to = [a.strip() for a in str(cfg.email_to).split(",") if a.strip()]
    if cfg.smtp_host and to:
        sender = cfg.email_from or f"t0dqm@{socket.gethostname()}"
        out.append(EmailNotifier(cfg.smtp_host, to, sender, timeout))
    if cfg.webhook_url:
        out.append(
            WebhookNotifier(
                cfg.webhook_url, timeout, {"flavour": settings.flavour, "host": socket.gethostname()}
            )
        )
    if cfg.sound or cfg.sound_file:
        out.append(SoundNotifier(cfg.sound_file, timeout=timeout))
    return out


def _row_to_alarm(row: Any) -> Alarm:
    return Alarm(
        row.key,
        row.severity,
        row.message,
        row.first_at,
        row.last_at,
        row.count,
        bool(row.active),
        row.notified_at,
    )


def list_alarms(catalog: Catalog, recent_seconds: float = 86400, now: float | None = None) -> list[Alarm]:
    """Active alarms and those cleared within ``recent_seconds``, newest first."""
    now = time.time() if now is None else now
    with catalog.read() as conn:
        rows = alarms.active_and_recent(conn, now - recent_seconds)
    return [_row_to_alarm(r) for r in rows]


def _claim(catalog: Catalog, alarm: Alarm, now: float, min_interval: float) -> bool:
    """Set notified_at=now only if it is still due (one dispatcher wins)."""
    with catalog.begin() as conn:
        return alarms.claim_notification(conn, alarm.key, alarm.notified_at, now)


def dispatch_pending(
    catalog: Catalog,
    settings: config.Settings,
    notifiers: Sequence[Notifier] | None = None,
    now: float | None = None,
) -> int:
    """Send every due alarm through every notifier; return how many alarms were sent.

    A notifier that fails is logged and does not stop the others; an alarm none of the notifiers could
    deliver is released (notified_at restored) so the next dispatch tries again.
    """
    now = time.time() if now is None else now
    min_interval = float(settings.alarms.min_interval)
    notifiers = list(notifiers) if notifiers is not None else notifiers_from_settings(settings)
    with catalog.read() as conn:
        rows = alarms.active_oldest_first(conn)
    sent = 0
    for alarm in (_row_to_alarm(r) for r in rows):
        if not is_due(alarm, now, min_interval) or not _claim(catalog, alarm, now, min_interval):
            continue
        delivered = 0
        for notifier in notifiers:
            try:
                notifier.send(alarm)
                delivered += 1
            except Exception as exc:  # noqa: BLE001 - one broken channel must not silence the others
                log.warning("notifier %s failed for %s: %s", notifier.name, alarm.key, exc)
        if delivered:
            sent += 1
        else:
            with catalog.begin() as conn:
                alarms.unclaim_notification(conn, alarm.key, now, alarm.notified_at)
    return sent
