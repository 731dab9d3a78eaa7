"""`t0dqm chaos --hosts N`: the chaos run with its workers on N simulated hosts.

Each host has its own hostname, pids and /proc (t0dqm.dev.chaos_ns, root only): its worker roles and beat run
there as an operator starts them (t0dqm.dev.chaos_layout), so every claim, lease, heartbeat and audit row
carries that host's name, and no host can see another's processes. One Redis with a password, one catalog
(PostgreSQL with ``--catalog-url``), one XRootD endpoint and one data folder are shared, as in a real
deployment. On top of the single-host faults (t0dqm.dev.chaos) it kills a whole host and brings up a
replacement with another name, kills the beat leader and the index-merge worker (each restarted later),
and can keep the archive host down for a long outage. It measures the time other hosts take to move the
dead host's work on, how long the schedule stopped, queue depth against pending items, and messages per
file (t0dqm.dev.chaos_measure).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t0dqm import config
from t0dqm.catalog import heartbeats
from t0dqm.catalog import status as views
from t0dqm.catalog.states import INDEX_PARTIAL
from t0dqm.dev import chaos_ns, services
from t0dqm.dev.chaos import Chaos, ChaosOptions, Echo, _pids_of, chaos_env
from t0dqm.dev.chaos_layout import BEAT, ROLE_CONCURRENCY, HostSpec, host_name, layout, queues_of
from t0dqm.dev.chaos_measure import Held, Sampler, first_index_after, first_send_after, held_by, takeover
from t0dqm.dev.stack import Child, LocalStack
from t0dqm.steps.index import merge_lease_name

WATCHDOG_SECONDS = 90.0  # a live worker silent to pings this long is restarted


def answering(probe: Any, timeout: float) -> set[tuple[str, str]]:
    """(role, host) of every worker answering a ping; node names are role@host, or
    role.flavour.pid@host as `t0dqm worker --role` names them."""
    replies = probe.control.ping(timeout=timeout) or []
    return {(n.split("@")[0].split(".")[0], n.split("@")[-1]) for reply in replies for n in reply}


class ChaosError(RuntimeError):
    """The run cannot start as asked (e.g. the catalog database is not empty)."""


@dataclass
class HostsOptions(ChaosOptions):
    hosts: int = 3
    catalog_url: str = ""  # empty: the SQLite catalog in the data folder
    host_kills: int = 1  # archive host SIGKILLed, replaced by a host with another name
    beat_kills: int = 1  # beat leader SIGKILLed, restarted after beat_restart_delay
    merge_kills: int = 1  # index-merge worker SIGKILLed, restarted after merge_restart_delay
    replace_delay: float = 5.0
    beat_restart_delay: float = 45.0
    merge_restart_delay: float = 20.0
    host_outage: float = 0.0  # seconds the archive host stays down (0: no long outage)
    standbys: str = "auto"  # a second beat and index-merge worker: yes, no, auto (when elected)


def worker_cli_available() -> bool:
    """True when this t0dqm has `t0dqm worker --role` and `t0dqm beat`."""
    from t0dqm.cli import cli

    return "worker" in cli.commands and "beat" in cli.commands


def elections_available() -> bool:
    """True when this t0dqm elects its singletons (beat, index merge): standbys are then safe to run."""
    import importlib.util

    return importlib.util.find_spec("t0dqm.beat_election") is not None


def prepare_database(url: str) -> str:
    """The catalog database must hold no t0dqm catalog; a missing PostgreSQL database is created.
    Returns what was done, for the log."""
    from t0dqm.catalog.db import DatabaseRefused, prepare_empty_database

    try:
        return prepare_empty_database(url)
    except DatabaseRefused as exc:
        raise ChaosError(str(exc)) from None


@dataclass
class Proc:
    """One worker role or beat on one host."""

    host: str
    role: str
    standby: bool = False
    child: Child | None = None
    restart_at: float | None = None  # monotonic; set while a deliberate kill waits for its restart
    seen_at: float = 0.0  # monotonic: started, or last answered a ping
    wrapped: bool = False  # child is nsenter; the worker is its child, inside the simulated host

    @property
    def name(self) -> str:
        return f"{self.host}-{self.role}"

    @property
    def node(self) -> str:
        return f"{self.role}@{self.host}"

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def pids(self) -> list[int]:
        """The worker (or beat) and every process it forked, as this machine numbers them."""
        if not self.alive():
            return []
        assert self.child
        pid = self.child.proc.pid
        below = chaos_ns.descendants(pid)
        return below if self.wrapped else [pid, *below]

    def kill(self) -> None:
        """SIGKILL the process group: the worker and every pool process it forked."""
        if self.child is None:
            return
        try:
            os.killpg(self.child.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.child.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class Host:
    spec: HostSpec
    procs: list[Proc] = field(default_factory=list)
    alive: bool = True
    ns: chaos_ns.SimulatedHost | None = None

    def kill(self) -> None:
        """Every process of the host at once (its pid 1 when simulated), then what is left outside."""
        if self.ns:
            self.ns.kill()
        for proc in self.procs:
            proc.kill()
        self.alive = False

    def pid_map(self) -> dict[int, int]:
        """{pid inside the host: pid on this machine} of its workers and beats."""
        out = {}
        for proc in self.procs:
            for pid in proc.pids():
                inner = chaos_ns.inner_pid(pid) if self.ns else pid
                if inner is not None:
                    out[inner] = pid
        return out

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Event:
    """A deliberate kill and what followed it."""

    kind: str
    host: str
    at: float  # wall time of the kill
    held: Held | None = None
    replacement: str = ""
    partials: int = 0


class MultiHostChaos(Chaos):
    opt: HostsOptions

    def __init__(self, root: Path, options: HostsOptions, echo: Echo = print) -> None:
        super().__init__(root, options, echo)
        self.hosts: list[Host] = []
        self.names_used = 0
        self.redis: services.Service | None = None
        self.broker_url = ""
        self.namespaces = False
        self.standbys = False
        self.worker_cli = False
        self.pinged_at = 0.0
        self.hung: list[str] = []  # workers the watchdog restarted
        self.sampler: Sampler | None = None
        self.events: list[Event] = []
        self.replacements: list[tuple[float, HostSpec, bool]] = []  # (due, host, ends an outage)

    # -- set-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        from t0dqm.dev.chaos import CatalogDisk

        self.xrootd = services.start_xrootd(self.xrootd_base)
        endpoint = f"{self.xrootd.url}/store/archive"
        env = chaos_env(endpoint)
        flavour_root = self.root / "dev"
        if self.opt.catalog_url:
            self.echo(f"catalog  {prepare_database(self.opt.catalog_url)}")
            env["T0DQM_CATALOG_URL"] = self.opt.catalog_url
        else:
            self.catalog_disk = CatalogDisk(flavour_root / "catalog")
            if self.opt.catalog_faults and self.catalog_disk.mount():
                env["T0DQM_CATALOG_URL"] = f"sqlite:///{self.catalog_disk.path / 'catalog.sqlite'}"
        self.redis = services.start_redis(
            flavour_root / "redis", password=secrets.token_hex(16), persistent=True
        )
        self.broker_url = self.redis.url
        env["T0DQM_BROKER_URL"] = self.broker_url
        os.environ.update(env)
        os.environ["T0DQM_ROOT"] = str(self.root)
        self.settings = config.load(None)
        config.reset(self.settings)
        self.stack = LocalStack(self.settings, extra_env=env)
        self.stack.broker_url = self.broker_url
        self.db_upgrade()
        self.namespaces = chaos_ns.available()
        n_hosts = self.opt.hosts if self.namespaces else 1
        if not self.namespaces:
            self.echo(
                "note     simulated hosts need root (unshare/nsenter): running ONE host with every role"
            )
        self.standbys = {"yes": True, "no": False}.get(self.opt.standbys, elections_available())
        self.worker_cli = worker_cli_available()
        for spec in layout(n_hosts, self.standbys):
            self.start_host(spec)
        self.names_used = n_hosts  # replacements are named after the last host
        self.wait_ready()
        assert self.settings
        queues = {
            base: f"{self.settings.queue_prefix}{base}"
            for base in ("receive", "index", "index-merge", "archive", "tape", "cleanup", "sync", "ops")
        }
        prefix = f"t0dqm:{self.settings.flavour}:"
        self.sampler = Sampler(
            self.settings, self.broker_url, queues, (f"{prefix}metrics:tasks", f"{prefix}metrics:messages")
        )
        self.sampler.start()
        self.echo(
            f"stack    broker {self.redis.url.split('@')[-1]} (password); endpoint {endpoint}; "
            f"catalog {self.settings.catalog_url.split('@')[-1]}"
        )
        for host in self.hosts:
            self.echo(f"host     {host.name}: {self.describe(host.spec)}")
        if self.catalog_disk is None or not self.catalog_disk.mounted:
            self.echo("note     catalog disk faults only with the SQLite catalog as root: not injected")

    def db_upgrade(self) -> None:
        """What an operator runs once per release, before starting workers."""
        result = subprocess.run(
            [sys.executable, "-m", "t0dqm", "db", "upgrade"],
            env=self.stack.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise ChaosError(f"t0dqm db upgrade failed: {result.stdout}{result.stderr}")

    @staticmethod
    def describe(spec: HostSpec) -> str:
        text = ", ".join(spec.roles)
        return text + (f" (+ standby {', '.join(spec.standby)})" if spec.standby else "")

    def new_host_name(self) -> str:
        name = host_name(self.names_used)
        self.names_used += 1
        return name

    def start_host(self, spec: HostSpec) -> Host:
        host = Host(spec, ns=chaos_ns.SimulatedHost(spec.name) if self.namespaces else None)
        self.hosts.append(host)
        for role in spec.all_roles:
            proc = Proc(
                spec.name,
                role,
                standby=role in spec.standby and role not in spec.roles,
                wrapped=host.ns is not None,
            )
            host.procs.append(proc)
            self.spawn(proc)
        return host

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def owner_host(self, owner: str | None) -> Host | None:
        """The live host whose name starts a claim or lease owner (``host:pid:...``)."""
        name = (owner or "").split(":", 1)[0]
        return next((h for h in self.hosts if h.alive and h.name == name), None)

    def command(self, proc: Proc) -> list[str]:
        """As an operator starts it: `t0dqm worker --role R` / `t0dqm beat` when this t0dqm has them,
        else the plain celery commands with the flavour's queues."""
        assert self.settings
        schedule = self.settings.work_dir / f"celerybeat-{proc.host}"  # beat's local state, one per beat
        schedule.parent.mkdir(parents=True, exist_ok=True)
        if self.worker_cli:
            if proc.role == BEAT:
                return [
                    sys.executable,
                    "-m",
                    "t0dqm",
                    "beat",
                    "--schedule",
                    str(schedule),
                    "--loglevel",
                    "INFO",
                ]
            return [
                sys.executable,
                "-m",
                "t0dqm",
                "worker",
                "--role",
                proc.role,
                "-c",
                str(ROLE_CONCURRENCY[proc.role]),
                "--loglevel",
                "INFO",
            ]
        if proc.role == BEAT:
            return [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "t0dqm",
                "beat",
                "-s",
                str(schedule),
                "--loglevel",
                "INFO",
            ]
        queues = queues_of((proc.role,), self.settings.queue_prefix)
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "t0dqm",
            "worker",
            "-Q",
            ",".join(queues),
            "-c",
            str(ROLE_CONCURRENCY[proc.role]),
            "-n",
            proc.node,
            "--prefetch-multiplier",
            "1",
            "-E",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ]

    def spawn(self, proc: Proc) -> None:
        args = self.command(proc)
        ns = self.host(proc.host).ns
        if ns:
            assert self.settings
            args = ns.command(args, cwd=str(self.settings.root))
        proc.child = self.stack._spawn(proc.name, args)
        proc.seen_at = time.monotonic()

    def worker_procs(self) -> list[Proc]:
        return [p for h in self.hosts if h.alive for p in h.procs if p.role != BEAT]

    def probe(self) -> Any:
        """A bare Celery client on the broker, for pings."""
        from celery import Celery

        probe = Celery(broker=self.broker_url)
        probe.conf.update(accept_content=["json"], task_serializer="json")
        return probe

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Return once every worker of every live host answers a ping."""
        probe = self.probe()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                want = {(p.role, p.host) for p in self.worker_procs()}
                dead = [p.name for p in self.worker_procs() if not p.alive()]
                if dead:
                    raise ChaosError(f"{', '.join(dead)} exited at start; see {self.stack.log_dir}")
                if want <= answering(probe, timeout=1.0):
                    return
            raise ChaosError(f"workers did not all answer within {timeout} s; see {self.stack.log_dir}")
        finally:
            probe.close()

    # -- process supervision (what systemd does on each host) -------------------------------------
    def _worker_pids(self) -> list[int]:
        return [pid for p in self.worker_procs() for pid in p.pids()]

    def _machine_pids(self, owners: list[str]) -> list[int]:
        """Each owner's pid, as its host numbers it, turned into this machine's pid."""
        maps = {h.name: h.pid_map() for h in self.hosts if h.alive}
        out = []
        for owner in owners:
            host = (owner or "").split(":", 1)[0]
            out += [maps[host][pid] for pid in _pids_of([owner]) if pid in maps.get(host, {})]
        return out

    def restart_dead_workers(self) -> None:
        now = time.monotonic()
        for host in self.hosts:
            if not host.alive:
                continue
            for proc in host.procs:
                if proc.alive() or (proc.restart_at is not None and now < proc.restart_at):
                    continue
                proc.kill()  # pool processes a killed main process left behind
                proc.restart_at = None
                self.spawn(proc)
        for due, spec, ends_outage in list(self.replacements):
            if now >= due:
                self.replacements.remove((due, spec, ends_outage))
                self.start_host(spec)
                self.echo(f"host     {spec.name} up: {self.describe(spec)}")
                if ends_outage:
                    self.faults.touch()
        self.watchdog()

    def watchdog(self) -> None:
        """Every 15 s, ping the workers; one that has not answered for WATCHDOG_SECONDS although its
        process runs is hung (seen: a worker main process blocked for good in a Redis pub/sub read after
        Redis restarted). Restart it, as an operator's watchdog would, and count it in the result."""
        now = time.monotonic()
        if now - self.pinged_at < 15:
            return
        self.pinged_at = now
        probe = self.probe()
        try:
            seen = answering(probe, timeout=2.0)
        except Exception:  # noqa: BLE001 - Redis may be restarting: no verdict this time
            return
        finally:
            probe.close()
        for proc in self.worker_procs():
            if (proc.role, proc.host) in seen:
                proc.seen_at = now
            elif proc.alive() and now - proc.seen_at > WATCHDOG_SECONDS:
                self.echo(
                    f"watchdog {proc.node} has not answered a ping for {now - proc.seen_at:.0f} s: restarted"
                )
                self.hung.append(f"{proc.node} at {time.time():.0f}")
                proc.kill()
                proc.restart_at = None
                self.spawn(proc)

    def restart_redis_empty(self) -> None:
        assert self.redis and self.redis.data_dir
        port, data_dir = self.redis.port, self.redis.data_dir
        password = self.broker_url.split("://:", 1)[1].split("@", 1)[0]
        self.redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        self.redis = services.start_redis(data_dir, port=port, password=password, persistent=True)
        self.faults.add("redis-restart-empty", f"port {port}")

    # -- faults ---------------------------------------------------------------------------------
    def schedule(self, span: float) -> list[tuple[float, str]]:
        plan = super().schedule(span)
        if len([h for h in self.hosts if h.alive]) > 1:
            plan += [
                (self.rng.uniform(span * 0.25, span * 0.55), "host-kill") for _ in range(self.opt.host_kills)
            ]
            if self.opt.host_outage > 0:
                plan.append((span * 0.15, "host-outage"))
        plan += [(self.rng.uniform(span * 0.3, span * 0.6), "beat-kill") for _ in range(self.opt.beat_kills)]
        plan += [
            (self.rng.uniform(span * 0.2, span * 0.6), "merge-kill") for _ in range(self.opt.merge_kills)
        ]
        return sorted(plan)

    def inject(self, kind: str) -> bool:
        if kind in ("host-kill", "host-outage"):
            return self.kill_host(outage=kind == "host-outage")
        if kind == "beat-kill":
            return self.kill_beat_leader()
        if kind == "merge-kill":
            return self.kill_merge_worker()
        return super().inject(kind)

    def faults_pending(self) -> bool:
        return super().faults_pending() or bool(self.replacements)

    def kill_host(self, outage: bool) -> bool:
        """SIGKILL every process of a live archive host, preferably while it holds a copy claim or a zip
        lease (waiting up to 15 s for one); a host with another name replaces it after a delay."""
        assert self.settings
        candidates = [h for h in self.hosts if h.alive and "archive" in h.spec.roles]
        if not candidates:
            return False  # all down (an outage, a replacement on its way): due again next turn
        cat = self.catalog()
        try:
            deadline = time.monotonic() + 15.0
            while True:
                held = {h.name: held_by(cat, h.name) for h in candidates}
                busy = [h for h in candidates if held[h.name].count()]
                if busy or time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        finally:
            cat.dispose()
        host = self.rng.choice(busy or candidates)
        held_now = held[host.name]
        at = time.time()
        host.kill()
        delay = self.opt.host_outage if outage else self.opt.replace_delay
        spec = HostSpec(self.new_host_name(), host.spec.roles, host.spec.standby)
        self.replacements.append((time.monotonic() + delay, spec, outage))
        self.events.append(
            Event(
                "host-outage" if outage else "host-kill", host.name, at, held=held_now, replacement=spec.name
            )
        )
        self.faults.add(
            "host-outage" if outage else "host-kill",
            f"{host.name} ({held_now.count()} items held); {spec.name} replaces it in {delay:.0f} s",
        )
        self.echo(
            f"fault    {host.name} killed ({held_now.count()} items held); {spec.name} in {delay:.0f} s"
        )
        return True

    def beat_leader(self) -> Proc | None:
        """The beat that sends: with an election, the one on the lease holder's host; else the first."""
        beats = [p for h in self.hosts if h.alive for p in h.procs if p.role == BEAT and p.alive()]
        assert self.settings
        leader = self.owner_host(self.lease_owner(f"beat-leader:{self.settings.flavour}"))
        return next((p for p in beats if leader and p.host == leader.name), beats[0] if beats else None)

    def kill_beat_leader(self) -> bool:
        proc = self.beat_leader()
        if proc is None:
            return False  # the killed one waits for its restart: due again next turn
        at = time.time()
        proc.kill()
        proc.restart_at = time.monotonic() + self.opt.beat_restart_delay
        self.events.append(Event("beat-kill", proc.host, at))
        self.faults.add(
            "beat-leader-kill", f"beat on {proc.host}; back in {self.opt.beat_restart_delay:.0f} s"
        )
        return True

    def kill_merge_worker(self) -> bool:
        """SIGKILL the index-merge worker holding the merge lease (else the first one), waiting up to 15 s
        for a merge to be under way or partial indexes to wait for one."""
        assert self.settings
        procs = [p for p in self.worker_procs() if p.role == "index-merge" and p.alive()]
        if not procs:
            return False
        deadline = time.monotonic() + 15.0
        while True:
            merging = self.owner_host(self.lease_owner(merge_lease_name(self.settings)))
            holder = [p for p in procs if merging and p.host == merging.name]
            partials = self.partial_files()
            if holder or partials or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        proc = (holder or procs)[0]
        at = time.time()
        proc.kill()
        proc.restart_at = time.monotonic() + self.opt.merge_restart_delay
        self.events.append(Event("merge-kill", proc.host, at, partials=partials))
        self.faults.add(
            "merge-worker-kill",
            f"index-merge on {proc.host} ({'merging' if holder else 'idle'}, "
            f"{partials} partial); back in {self.opt.merge_restart_delay:.0f} s",
        )
        return True

    def partial_files(self) -> int:
        cat = self.catalog()
        try:
            with cat.read() as conn:
                return views.count_files_in_index_state(conn, INDEX_PARTIAL)
        finally:
            cat.dispose()

    def lease_owner(self, name: str) -> str | None:
        """Owner of the named lease while it is unexpired."""
        cat = self.catalog()
        try:
            with cat.read() as conn:
                return heartbeats.unexpired_lease_owner(conn, name, time.time())
        finally:
            cat.dispose()

    # -- results --------------------------------------------------------------------------------
    def measures(self) -> dict[str, Any]:
        assert self.settings
        out: dict[str, Any] = {}
        if self.sampler:
            self.sampler.stop()
            out.update(self.sampler.results(self.expected()[0]))
        out["hung workers restarted by the watchdog"] = len(self.hung)
        out["hosts"] = {h.name: self.describe(h.spec) + ("" if h.alive else " (killed)") for h in self.hosts}
        out["simulated hosts (UTS namespaces)"] = self.namespaces
        out["standby beat and index-merge"] = self.standbys
        out["started by"] = (
            "t0dqm worker --role / t0dqm beat" if self.worker_cli else "celery -A t0dqm worker -Q"
        )
        cat = self.catalog()
        beat_logs = [
            self.stack.log_dir / f"{h.name}-{BEAT}.log" for h in self.hosts if BEAT in h.spec.all_roles
        ]
        try:
            for i, ev in enumerate(self.events, 1):
                label = f"{ev.kind} {i} ({ev.host})"
                if ev.kind in ("host-kill", "host-outage") and ev.held is not None:
                    out[label] = dict(takeover(cat, ev.held, ev.at, ev.host), replacement=ev.replacement)
                elif ev.kind == "beat-kill":
                    out[label] = {"first task sent after the kill (s)": first_send_after(beat_logs, ev.at)}
                elif ev.kind == "merge-kill":
                    out[label] = {
                        "partial files at the kill": ev.partials,
                        "first file indexed after the kill (s)": first_index_after(cat, ev.at),
                    }
        finally:
            cat.dispose()
        return out

    def stop(self) -> None:
        if self.sampler and self.sampler.is_alive():
            self.sampler.stop()
        for host in self.hosts:  # workers first get a warm shutdown (stack.stop), then the hosts go
            for proc in host.procs:
                if proc.alive() and proc.child:
                    try:
                        os.killpg(proc.child.proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
        deadline = time.monotonic() + 20
        while any(p.alive() for h in self.hosts for p in h.procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        for host in self.hosts:
            host.kill()
        super().stop()
        if self.redis:
            self.redis.stop()
            self.redis = None
