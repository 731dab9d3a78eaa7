"""Alarm notifiers against a real SMTP server (aiosmtpd) and a real HTTP webhook receiver."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from t0dqm import config, notify
from t0dqm.catalog import alarms
from t0dqm.catalog.db import get_catalog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[str, Mailbox]]:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield f"127.0.0.1:{port}", box
    controller.stop()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def with_alarm_settings(settings: config.Settings, **values: Any) -> config.Settings:
    current = config.Settings(data=dict(settings.data, alarms=dict(settings["alarms"], **values)))
    config.reset(current)
    return current


def test_email_webhook_log_rate_limited(
    settings: config.Settings,
    smtp: tuple[str, Mailbox],
    webhook: tuple[str, list[dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    host, mailbox = smtp
    url, received = webhook
    current = with_alarm_settings(
        settings,
        smtp_host=host,
        email_to="ops@example.org, shift@example.org",
        webhook_url=url,
        min_interval=600,
    )
    catalog = get_catalog(current.catalog_url)
    assert [n.name for n in notify.notifiers_from_settings(current)] == ["log", "email", "webhook"]
    alarms.raise_alarm(
        catalog, "queue-stuck:receive", "receive queue not consumed for 900 s", severity="critical"
    )

    caplog.set_level("WARNING", logger="t0dqm.notify")
    assert notify.dispatch_pending(catalog, current, now=1000.0) == 1
    assert len(mailbox.messages) == 1
    envelope = mailbox.messages[0]
    assert sorted(envelope.rcpt_tos) == ["ops@example.org", "shift@example.org"]
    text = envelope.content.decode()
    assert "Subject: [t0dqm critical] queue-stuck:receive" in text and "not consumed for 900 s" in text
    assert received[0]["key"] == "queue-stuck:receive" and received[0]["severity"] == "critical"
    assert received[0]["flavour"] == "dev"
    assert "ALARM queue-stuck:receive" in caplog.text

    # raised again (count 2) and dispatched again within the interval: nothing new is sent
    alarms.raise_alarm(catalog, "queue-stuck:receive", "still stuck", severity="critical")
    assert notify.dispatch_pending(catalog, current, now=1000.0 + 599) == 0
    assert len(mailbox.messages) == 1 and len(received) == 1
    # after the interval it is sent again, with the latest message and count
    assert notify.dispatch_pending(catalog, current, now=1000.0 + 600) == 1
    assert (
        len(mailbox.messages) == 2 and received[1]["count"] == 2 and received[1]["message"] == "still stuck"
    )

    # a cleared alarm is not sent; a new key is sent at once
    alarms.clear_alarm(catalog, "queue-stuck:receive")
    alarms.raise_alarm(catalog, "beat-dead", "no beat heartbeat for 120 s")
    assert notify.dispatch_pending(catalog, current, now=1000.0 + 5000) == 1
    assert [r["key"] for r in received] == ["queue-stuck:receive", "queue-stuck:receive", "beat-dead"]


def test_failing_channel_does_not_silence_the_others(
    settings: config.Settings, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    current = with_alarm_settings(
        settings, smtp_host=f"127.0.0.1:{free_port()}", email_to="ops@example.org", webhook_url=url
    )
    catalog = get_catalog(current.catalog_url)
    alarms.raise_alarm(catalog, "k", "m")
    assert notify.dispatch_pending(catalog, current) == 1  # SMTP refused, webhook and log delivered
    assert [r["key"] for r in received] == ["k"]


def test_nothing_delivered_is_retried(settings: config.Settings) -> None:
    class Broken:
        name = "broken"

        def send(self, alarm: notify.Alarm) -> None:
            raise OSError("down")

    catalog = get_catalog(settings.catalog_url)
    alarms.raise_alarm(catalog, "k", "m")
    assert notify.dispatch_pending(catalog, settings, notifiers=[Broken()], now=10.0) == 0
    assert notify.dispatch_pending(catalog, settings, notifiers=[notify.LogNotifier()], now=11.0) == 1


def test_sound_plays_file_or_speaks_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "played.txt"
    player = bindir / "aplay"
    player.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    player.chmod(player.stat().st_mode | stat.S_IEXEC)
    alarm = notify.Alarm("k", "warning", "disk full", 1.0, 2.0, 1)

    def which_in(path: Path):
        return lambda name: (
            str(path / name) if (path / name).exists() and os.access(path / name, os.X_OK) else None
        )

    notify.SoundNotifier("/sounds/alarm.wav", which=which_in(bindir)).send(alarm)
    assert record.read_text().strip() == "/sounds/alarm.wav"

    speaker = bindir / "espeak-ng"
    speaker.write_text(f'#!/bin/sh\necho "spoken: $@" >> {record}\n')
    speaker.chmod(speaker.stat().st_mode | stat.S_IEXEC)
    player.unlink()
    notify.SoundNotifier("/sounds/alarm.wav", which=which_in(bindir)).send(alarm)
    assert record.read_text().splitlines()[-1] == "spoken: t0dqm warning: disk full"

    speaker.unlink()
    caplog.set_level("WARNING", logger="t0dqm.notify")
    notify.SoundNotifier("", which=which_in(bindir)).send(alarm)
    assert "no sound player" in caplog.text


def test_alarms_ls_cli(settings: config.Settings) -> None:
    from t0dqm.cli import cli

    catalog = get_catalog(settings.catalog_url)
    alarms.raise_alarm(catalog, "producer-disk:prod1", "done folder cannot free enough", severity="critical")
    alarms.raise_alarm(catalog, "old", "was bad")
    alarms.clear_alarm(catalog, "old")
    env = {"T0DQM_ROOT": str(settings.root), "T0DQM_FLAVOUR": "dev"}
    result = CliRunner().invoke(cli, ["alarms", "ls"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].startswith("active") and "producer-disk:prod1" in lines[1]
    assert lines[2].startswith("cleared") and "old" in lines[2]
    result = CliRunner().invoke(cli, ["alarms", "ls", "--json"], env=env)
    assert [json.loads(line)["key"] for line in result.output.splitlines()] == ["producer-disk:prod1", "old"]
