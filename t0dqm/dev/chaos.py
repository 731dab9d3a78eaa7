"""`t0dqm chaos`: the whole chain under injected faults, then an audit of the invariants.

The local stack (two workers, beat, a private Redis) and a real XRootD archive endpoint carry N simulated
files from upload to verified archive while a seeded schedule injects: SIGKILL of worker processes
(some while they hold a zip append lease or copy an archive), Redis restarted with all its data lost,
the XRootD server stopped for a while, corrupted copies at the endpoint, a duplicate upload, and the
catalog's file system briefly full and read-only (when we may mount a tmpfs, i.e. as root).
Afterwards every invariant is checked from the catalog, the index, and the endpoint's bytes.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from t0dqm import config, storage
from t0dqm.catalog import audit, heartbeats
from t0dqm.catalog import status as views
from t0dqm.catalog.db import Catalog
from t0dqm.catalog.states import INDEXED, archive_safe_states
from t0dqm.dev import services
from t0dqm.dev.chaos_ns import children

Echo = Callable[[str], Any]


@dataclass
class ChaosOptions:
    files: int = 1000
    seed: int = 1
    kills: int = 20
    redis_restarts: int = 2
    xrootd_outage: float = 30.0
    corruptions: int = 5
    duplicates: int = 1
    broken: int = 10
    catalog_faults: bool = True
    timeout: float = 1800.0
    hists: int = 30


@dataclass
class FaultLog:
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    last_at: float | None = None  # monotonic time of the last fault (an outage counts at its end)

    def add(self, kind: str, note: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.notes.append(f"{kind}: {note}")
        self.touch()

    def touch(self) -> None:
        self.last_at = time.monotonic()


def chaos_env(endpoint: str) -> dict[str, str]:
    """Short cycles so recovery happens within the run (production values are in config.DEFAULTS)."""
    return {
        "T0DQM_ARCHIVE_ENDPOINT": endpoint,
        "T0DQM_ARCHIVE__FREEZE_AGE": "6",
        "T0DQM_ARCHIVE__VERIFY_DELAY": "10",
        "T0DQM_ARCHIVE__RETRY_BASE": "2",
        "T0DQM_ARCHIVE__RETRY_CAP": "20",
        "T0DQM_ARCHIVE__STAGE_MAX_TRIES": "30",
        "T0DQM_ARCHIVE__ZIP_LEASE": "45",
        "T0DQM_RECONCILE__INTERVAL": "5",
        "T0DQM_RECONCILE__STALE_SECONDS": "20",
        "T0DQM_RECONCILE__LEASE_SECONDS": "60",
        # a message lost with a killed worker keeps its (step, item) marker until this expires (3,600 s in
        # production): short, so the item resumes within the run (docs/reliability.md, finding 1)
        "T0DQM_RECONCILE__QUEUED_TTL": "180",
        "T0DQM_RECEIVE__SCAN_INTERVAL": "1",
        "T0DQM_TIMEOUTS__IO": "10",
        "T0DQM_TIMEOUTS__COPY": "60",
        "T0DQM_BEAT__EVERY__ZIP_FREEZE": "3",
        "T0DQM_BEAT__EVERY__TAPE_VERIFY": "3",
        "T0DQM_BEAT__EVERY__INDEX_MERGE": "2",
        "T0DQM_BEAT__EVERY__DAILY_CLEAN": "15",
    }


class CatalogDisk:
    """The catalog's folder on a small tmpfs we can fill or remount read-only (needs root)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False

    def mount(self) -> bool:
        if os.geteuid() != 0 or not shutil.which("mount"):
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(self.path)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        self.mounted = result.returncode == 0
        return self.mounted

    def fill(self, seconds: float) -> None:
        filler = self.path / "filler"
        try:
            with open(filler, "wb") as fh:
                block = b"\0" * (1 << 20)
                while True:
                    fh.write(block)
        except OSError:
            pass  # ENOSPC: the disk is full now
        time.sleep(seconds)
        filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            # best effort: a failed lazy unmount leaves a tmpfs behind, nothing to recover here
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30, check=False)
            self.mounted = False


class Chaos:
    def __init__(self, root: Path, options: ChaosOptions, echo: Echo = print) -> None:
        self.root = root
        self.opt = options
        self.echo = echo
        self.rng = random.Random(options.seed)
        self.faults = FaultLog()
        self.xrootd: services.Service | None = None
        self.xrootd_base = Path(tempfile.mkdtemp(prefix="t0dqm-chaos-xrootd-"))
        self.catalog_disk: CatalogDisk | None = None
        self.stack: Any = None
        self.settings: config.Settings | None = None
        self.manifest: list[dict[str, Any]] = []
        self.uploaded: list[dict[str, Any]] = []  # every upload made, duplicates included
        self.next_upload = 0  # position in the manifest
        self.outage_ends: float | None = None  # the XRootD server is down until then
        self.pending_corruptions = 0
        self.give_up = threading.Event()  # set (e.g. on SIGTERM): stop waiting, audit and report now

    # -- set-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        from t0dqm.dev.stack import LocalStack

        self.xrootd = services.start_xrootd(self.xrootd_base)
        endpoint = f"{self.xrootd.url}/store/archive"
        env = chaos_env(endpoint)
        flavour_root = self.root / "dev"
        self.catalog_disk = CatalogDisk(flavour_root / "catalog")
        if self.opt.catalog_faults and self.catalog_disk.mount():
            env["T0DQM_CATALOG_URL"] = f"sqlite:///{self.catalog_disk.path / 'catalog.sqlite'}"
        os.environ.update(env)
        os.environ["T0DQM_ROOT"] = str(self.root)
        self.settings = config.load(None)
        config.reset(self.settings)
        self.stack = LocalStack(self.settings, extra_env=env)
        self.stack.start(workers=2, concurrency=2, flower=False)
        self.stack.wait_ready()
        self.echo(
            f"stack    broker {self.stack.broker_url}; endpoint {endpoint}; data {self.settings.flavour_root}"
        )
        if not (self.catalog_disk and self.catalog_disk.mounted):
            self.echo("note     catalog disk faults need root (tmpfs mount): not injected")

    def catalog(self) -> Catalog:
        assert self.settings
        return Catalog(self.settings.catalog_url)

    # -- producer -------------------------------------------------------------------------------
    def produce(self) -> None:
        from t0dqm.dev import simulate

        assert self.settings
        out = self.settings.flavour_root / "producer"
        self.manifest = simulate.simulate(
            out, self.opt.files, self.opt.seed, broken=self.opt.broken, n_hists=self.opt.hists
        )
        self.rng.shuffle(self.manifest)

    def upload_some(self, count: int) -> int:
        from t0dqm.formats import dropbox

        assert self.settings
        batch = self.manifest[self.next_upload : self.next_upload + count]
        self.next_upload += len(batch)
        for entry in batch:
            declared = entry.get("declared_size")
            dropbox.upload(
                entry["file"], self.settings.dropbox, **({"declared_size": declared} if declared else {})
            )
            self.uploaded.append(entry)
        return len(batch)

    def duplicate_upload(self) -> None:
        from t0dqm.formats import dropbox

        assert self.settings
        good = [e for e in self.uploaded if not e["broken"]]
        if good:
            entry = self.rng.choice(good)
            dropbox.upload(entry["file"], self.settings.dropbox)
            self.uploaded.append(dict(entry, duplicate=True))
            self.faults.add("duplicate-upload", entry["name"])

    # -- faults ---------------------------------------------------------------------------------
    def _worker_pids(self) -> list[int]:
        pids = []
        for child in self.stack.children:
            if child.name.startswith("worker") and child.alive():
                pids.append(child.proc.pid)
                pids += children(child.proc.pid)
        return pids

    def _busy_pids(self) -> tuple[list[int], list[int]]:
        """Pids holding a zip append lease, and pids copying an archive (its claim)."""
        zip_owners, copiers = self._busy_owners()
        return self._machine_pids(zip_owners), self._machine_pids(copiers)

    def _machine_pids(self, owners: list[str]) -> list[int]:
        """The pids in claim or lease owners (``host:pid:...``), as this machine numbers them."""
        return _pids_of(owners)

    def _busy_owners(self) -> tuple[list[str], list[str]]:
        """Owners of the zip append leases, and of the claims of archives being copied."""
        now = time.time()
        cat = self.catalog()
        with cat.read() as conn:
            zip_owners = heartbeats.unexpired_owners(conn, "zip:%", now)
            copiers = views.archive_claimants(conn, "frozen", now)
        cat.dispose()
        return zip_owners, copiers

    def kill_worker(self, targeted: bool) -> bool:
        """SIGKILL a worker process; when ``targeted``, wait (up to 10 s) for one that holds a zip
        append lease or an archive copy claim, so the kill lands mid-append or mid-copy. False when no
        worker process is alive at the moment (all killed and not yet restarted): the kill is due again."""
        deadline = time.monotonic() + (10.0 if targeted else 0.0)
        while True:
            appenders, copiers = self._busy_pids()
            mine = set(self._worker_pids())
            for kind, candidates in (("kill-mid-copy", copiers), ("kill-mid-append", appenders)):
                live = [p for p in candidates if p in mine]
                if live:
                    pid = self.rng.choice(live)
                    _kill(pid)
                    self.faults.add(kind, f"pid {pid}")
                    return True
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        pids = sorted(mine)
        if not pids:
            return False
        pid = self.rng.choice(pids)
        _kill(pid)
        self.faults.add("kill-worker", f"pid {pid}")
        return True

    def restart_dead_workers(self) -> None:
        """What systemd's Restart=always does for a worker whose main process died."""
        for child in list(self.stack.children):
            if child.name.startswith("worker") and not child.alive():
                self.stack.children.remove(child)
                try:
                    os.killpg(child.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.stack.start_worker(child.name, 2)

    def restart_redis_empty(self) -> None:
        redis = self.stack.redis
        port, data_dir = redis.port, redis.data_dir
        if redis.proc:
            redis.proc.kill()
            redis.proc.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)
        from t0dqm.dev.stack import embedded_redis_executable

        self.stack.redis = services.start_redis(
            data_dir, port=port, persistent=True, executable=embedded_redis_executable()
        )
        self.faults.add("redis-restart-empty", f"port {port}")

    def xrootd_outage(self) -> float:
        assert self.xrootd
        self.xrootd.stop()
        self.faults.add("xrootd-outage", f"{self.opt.xrootd_outage:.0f} s")
        return time.monotonic() + self.opt.xrootd_outage

    def xrootd_back(self) -> None:
        assert self.xrootd
        self.xrootd = services.start_xrootd(self.xrootd_base, port=self.xrootd.port)
        self.faults.touch()

    def corrupt_copy(self) -> bool:
        """Flip bytes in an archive that reached the endpoint but is not yet verified."""
        assert self.settings and self.xrootd
        cat = self.catalog()
        with cat.read() as conn:
            rows = views.archives_in_state(conn, "copied")
        cat.dispose()
        self.rng.shuffle(rows)
        for row in rows:
            remote = self.endpoint_file(row.path)
            if not remote.exists() or remote.stat().st_size < 64:
                continue
            data = bytearray(remote.read_bytes())
            pos = self.rng.randrange(0, len(data))
            data[pos] ^= 0xFF
            # A new inode and a later mtime, so XRootD's checksum cache cannot answer from memory.
            tmp = remote.with_name(remote.name + ".chaos")
            tmp.write_bytes(bytes(data))
            stat = remote.stat()
            os.chown(tmp, stat.st_uid, stat.st_gid)
            os.replace(tmp, remote)
            later = time.time() + 2
            os.utime(remote, (later, later))
            self.faults.add("corrupt-copy", row.path)
            return True
        return False

    def nothing_left_to_corrupt(self) -> bool:
        """Every archive is past 'copied' and no new one can appear."""
        cat = self.catalog()
        try:
            with cat.read() as conn:
                left = views.count_archives_in(conn, ["open", "frozen", "copied"])
        finally:
            cat.dispose()
        return left == 0

    def endpoint_file(self, rel: str) -> Path:
        assert self.xrootd and self.xrootd.data_dir
        return self.xrootd.data_dir / "store" / "archive" / rel

    def catalog_disk_full(self) -> None:
        """The catalog's file system full for a few seconds (a read-only remount is refused by the
        kernel while SQLite holds the file open for writing, so "full" is the fault we inject)."""
        assert self.catalog_disk
        self.catalog_disk.fill(3.0)
        self.faults.add("catalog-disk-full", "3 s")

    # -- the run --------------------------------------------------------------------------------
    def schedule(self, span: float) -> list[tuple[float, str]]:
        """Seeded fault times within the first ``span`` seconds."""
        plan: list[tuple[float, str]] = []
        plan += [
            (self.rng.uniform(2, span * 0.7), "kill-targeted" if i % 2 else "kill")
            for i in range(self.opt.kills)
        ]
        plan += [(self.rng.uniform(span * 0.2, span * 0.8), "redis") for _ in range(self.opt.redis_restarts)]
        if self.opt.xrootd_outage > 0:
            plan.append((self.rng.uniform(span * 0.3, span * 0.6), "xrootd"))
        plan += [(self.rng.uniform(5, span * 0.5), "corrupt") for _ in range(self.opt.corruptions)]
        plan += [(self.rng.uniform(span * 0.1, span * 0.5), "duplicate") for _ in range(self.opt.duplicates)]
        if self.catalog_disk and self.catalog_disk.mounted:
            plan += [(self.rng.uniform(span * 0.1, span * 0.7), "catalog-full") for _ in range(2)]
        return sorted(plan)

    def inject(self, kind: str) -> bool:
        """Inject one scheduled fault (subclasses add kinds); False when it cannot be injected yet and is
        due again next turn (so every planned fault happens, whatever the timing)."""
        if kind.startswith("kill"):
            return self.kill_worker(targeted=kind == "kill-targeted")
        if kind == "redis":
            self.restart_redis_empty()
        elif kind == "xrootd" and self.outage_ends is None:
            self.outage_ends = self.xrootd_outage()
        elif kind == "corrupt":
            self.pending_corruptions += 1
        elif kind == "duplicate":
            self.duplicate_upload()
        elif kind == "catalog-full":
            self.catalog_disk_full()
        return True

    def tick(self) -> None:
        """Every loop turn: end outages, inject due corruptions, restart what died."""
        if self.outage_ends is not None and time.monotonic() >= self.outage_ends:
            self.xrootd_back()
            self.outage_ends = None
        if self.pending_corruptions and self.outage_ends is None and self.corrupt_copy():
            self.pending_corruptions -= 1
        self.restart_dead_workers()

    def faults_pending(self) -> bool:
        """A fault is still to come or still going on."""
        return bool(self.pending_corruptions) or self.outage_ends is not None

    def measures(self) -> dict[str, Any]:
        """Extra measurements for the result (subclasses)."""
        return {}

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.start()
        try:
            self.echo(f"producer writing {self.opt.files} files and {self.opt.broken} broken ones ...")
            self.produce()
            span = max(60.0, self.opt.files / 8.0)
            plan = self.schedule(span)
            upload_per_tick = max(1, len(self.manifest) // int(span * 1.2))  # uploads over ~60 % of span
            t0 = time.monotonic()
            last_report = 0.0
            while True:
                now = time.monotonic() - t0
                if self.next_upload < len(self.manifest):
                    self.upload_some(upload_per_tick)
                uploads_done = self.next_upload >= len(self.manifest)
                try:  # the catalog may refuse us for a while (disk full, connection limit): next turn
                    while plan and plan[0][0] <= now:
                        if not self.inject(plan[0][1]):
                            break  # not possible at this moment: due again next turn
                        plan.pop(0)
                    self.tick()
                    if (
                        self.pending_corruptions
                        and uploads_done
                        and not plan
                        and self.nothing_left_to_corrupt()
                    ):
                        self.faults.notes.append(
                            f"corruptions not injected: {self.pending_corruptions} (no copy left)"
                        )
                        self.pending_corruptions = 0
                except OperationalError as exc:
                    self.echo(
                        f"catalog  unavailable to the driver, trying again: {str(exc.orig).strip()[:120]}"
                    )
                if now - last_report >= 10:
                    self.echo(
                        f"[{now:6.0f}s] {self.progress_line()}  faults {sum(self.faults.counts.values())}"
                    )
                    last_report = now
                if not plan and not self.faults_pending() and uploads_done:
                    break
                if time.monotonic() - started > self.opt.timeout or self.give_up.is_set():
                    break
                time.sleep(0.5)
            self.echo(f"faults   {self.faults.counts}")
            quiet = self.wait_quiescence(started)
            quiet_at = time.monotonic()
            result = self.check()
            result["time_to_quiescence"] = round(quiet_at - started, 1)
            result["quiescent"] = quiet
            if self.faults.last_at is not None:
                result["quiescence after the last fault (s)"] = round(quiet_at - self.faults.last_at, 1)
            result.update(self.measures())
            return result
        finally:
            self.stop()

    def progress_line(self) -> str:
        from t0dqm.dev.demo import progress

        assert self.settings
        cat = self.catalog()
        try:
            p = progress(cat, self.settings.archive.require_tape)
        except OperationalError as exc:  # the catalog's disk may be the fault of the moment
            return f"catalog unavailable: {exc.orig}"
        finally:
            cat.dispose()
        return (
            f"received {p['received']}  indexed {p['indexed']}  archived {p['archived']}  "
            f"archives {p['archives_safe']}/{p['archives']}  quarantined {p['quarantined']}"
        )

    def expected(self) -> tuple[int, int]:
        good = sum(1 for e in self.uploaded if not e["broken"])
        bad = sum(1 for e in self.uploaded if e["broken"])
        return good, bad

    def wait_quiescence(self, started: float) -> bool:
        from t0dqm.dev.demo import done, progress

        assert self.settings
        n_good, n_bad = self.expected()
        last = 0.0
        while time.monotonic() - started < self.opt.timeout and not self.give_up.is_set():
            cat = self.catalog()
            try:
                self.restart_dead_workers()
                p = progress(cat, self.settings.archive.require_tape)
            except OperationalError:  # the catalog refuses us for a while: ask again
                p = None
            finally:
                cat.dispose()
            if p is not None and done(p, n_good, n_bad):
                return True
            if time.monotonic() - last > 10:
                self.echo(f"waiting  {time.monotonic() - started:5.0f}s {self.progress_line()}")
                last = time.monotonic()
            time.sleep(1.0)
        return False

    def stop(self) -> None:
        if self.stack:
            self.stack.stop()
        if self.xrootd:
            self.xrootd.stop()
        if self.catalog_disk:
            self.catalog_disk.unmount()
        shutil.rmtree(self.xrootd_base, ignore_errors=True)

    # -- invariants -----------------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        from t0dqm.steps import index as dqmindex

        assert self.settings
        settings = self.settings
        safe = archive_safe_states(settings.archive.require_tape)
        n_good, n_bad = self.expected()
        cat = self.catalog()
        with cat.read() as conn:
            rows = views.all_files_brief(conn)
            arch = views.all_archives(conn)
            mem = views.all_members(conn)
            n_quarantined = views.quarantined_with_reason(conn)
            deletes = audit.deletions(conn)
        cat.dispose()
        index_counts: dict[int, int] = {}
        for sample in dqmindex.Index(settings).samples():
            index_counts[sample["file_id"]] = index_counts.get(sample["file_id"], 0) + 1
        by_file: dict[int, list[int]] = {}
        for m in mem:
            by_file.setdefault(m.file_id, []).append(m.archive_id)
        indexed_once = sum(1 for r in rows if r.index_state == INDEXED and index_counts.get(r.id) == 1)
        in_one_verified = sum(
            1
            for r in rows
            if len(by_file.get(r.id, [])) == 1
            and arch[by_file[r.id][0]].state in safe
            and r.archive_id == by_file[r.id][0]
        )
        endpoint_ok, member_ok = self.check_endpoint(arch, mem, safe)
        early = self.deletions_before_verification(deletes, arch, rows)
        names_in = {e["name"] for e in self.uploaded if not e["broken"]}
        names_filed = {r.name for r in rows}
        lost = len(names_in - names_filed) + (n_good - len(rows) if len(rows) < n_good else 0)
        lost += sum(1 for r in rows if r.id not in by_file or arch[by_file[r.id][0]].state not in safe)
        safe_archives = sum(1 for a in arch.values() if a.state in safe)
        result = {
            "files in": n_good,
            "files filed": len(rows),
            "files indexed exactly once": indexed_once,
            "files in exactly one verified archive": in_one_verified,
            "archives verified": safe_archives,
            "archives whose endpoint checksum matches": endpoint_ok,
            "members whose adler32 matches at the endpoint": member_ok,
            "deletions before verification": early,
            "broken uploads": n_bad,
            "quarantined with reason": n_quarantined,
            "lost": lost,
            "faults": dict(self.faults.counts),
        }
        result["ok"] = (
            len(rows) == n_good
            and indexed_once == n_good
            and in_one_verified == n_good
            and endpoint_ok == safe_archives == len(arch)
            and member_ok == len(mem)
            and early == 0
            and n_quarantined == n_bad
            and lost == 0
        )
        return result

    def check_endpoint(self, arch: dict[int, Any], mem: list[Any], safe: tuple[str, ...]) -> tuple[int, int]:
        """Read every archive's bytes at the endpoint: whole-file adler32 and each member's adler32."""
        endpoint_ok = member_ok = 0
        by_archive: dict[int, dict[str, str]] = {}
        for m in mem:
            by_archive.setdefault(m.archive_id, {})[m.name] = m.adler32
        for a in arch.values():
            remote = self.endpoint_file(a.path)
            if a.state not in safe or not remote.exists():
                continue
            if storage.adler32_file(remote) == a.adler32:
                endpoint_ok += 1
            with zipfile.ZipFile(remote) as zf:
                for name, want in by_archive.get(a.id, {}).items():
                    try:
                        value = 1
                        with zf.open(name) as fh:
                            while block := fh.read(1 << 20):
                                value = zlib.adler32(block, value)
                        member_ok += f"{value:08x}" == want
                    except KeyError:
                        pass
        return endpoint_ok, member_ok

    def deletions_before_verification(self, deletes: list[Any], arch: dict[int, Any], rows: list[Any]) -> int:
        assert self.settings
        repo = str(self.settings.repository)
        zip_root = str(self.settings.zip_root)
        verified_at = {a.path: a.verified_at for a in arch.values()}
        file_archive = {r.path: r.archive_id for r in rows}
        early = 0
        for d in deletes:
            if d.path.startswith(zip_root + "/"):
                rel = d.path[len(zip_root) + 1 :]
                when = verified_at.get(rel)
                early += when is None or when > d.at
            elif d.path.startswith(repo + "/") and d.path.endswith(".root"):
                archive_id = file_archive.get(d.path[len(repo) + 1 :])
                when = arch[archive_id].verified_at if archive_id in arch else None
                early += when is None or when > d.at
        return early


def _pids_of(owners: list[str]) -> list[int]:
    out = []
    for owner in owners:
        parts = (owner or "").split(":")
        if len(parts) >= 2 and parts[1].isdigit():
            out.append(int(parts[1]))
    return out


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _rows(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """Nested measures as flat table rows: ``outer: inner``."""
    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _rows(f"{prefix}: {k}" if prefix else str(k), v)]
    return [(prefix, value)]


def render(result: dict[str, Any]) -> str:
    rows = [row for k, v in result.items() if k not in ("faults", "ok") for row in _rows(k, v)]
    rows += [(f"fault: {k}", v) for k, v in sorted(result.get("faults", {}).items())]
    width = max(len(str(k)) for k, _ in rows)
    lines = [f"{'invariant / measure':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append(f"{'all invariants hold':<{width}}  {'yes' if result.get('ok') else 'NO'}")
    return "\n".join(lines)
