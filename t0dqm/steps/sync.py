"""Online sync (visDQMOnlineSyncDaemon) and the partial mirror (visDQMAfsSync): the I/O side.

Online sync mirrors an HTTP directory listing (Apache-style HTML index, as the online GUI's
``data/browse`` serves it) recursively into the offline repository. Each remote file's size and mtime
come from a HEAD request (Content-Length, Last-Modified). Decisions: :func:`t0dqm.policies.mirror.
online_sync_action`. Downloads go to a hidden temp file, get the remote mtime, and are renamed into
place; N connections run in parallel; every request has a timeout; https verifies the server against the
system's CAs or ``ca`` (file or directory) and may present an X509 client certificate (``cert``/``key``, a
grid proxy, or the ``X509_*`` environment: :func:`x509_files`). An untrusted server certificate is refused.

The partial mirror copies the newest files of the repository into a size-limited folder
(:func:`t0dqm.policies.mirror.plan_mirror`); its deletions go through :func:`t0dqm.deleter.delete`,
so the mirror destination must be inside ``deletion.extra_roots``.

Configuration (all optional)::

    [sync]
    url = "https://online-gui/data/browse/Original/"   # empty: online sync disabled
    dest = "OnlineData/original"                        # relative to the repository
    connections = 5
    cert = ""  key = ""  ca = ""

    [mirror]
    dest = "/afs/.../dqm"                              # empty: partial mirror disabled
    quota = 130000000000                               # total bytes, shared by folders without a quota
    folders = {OnlineData = 0, OfflineData = 0}         # folder -> bytes; 0 or missing = share the rest
"""

from __future__ import annotations

import email.utils
import logging
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from t0dqm import config, deleter, storage
from t0dqm.policies import mirror as policy
from t0dqm.steps.next import Context, LeaseBusy, Outcome

log = logging.getLogger("t0dqm.steps.sync")

ONLINE_SYNC_TASK = "t0dqm.tasks.sync.online_sync"
PARTIAL_MIRROR_TASK = "t0dqm.tasks.sync.partial_mirror"
CHUNK = 1 << 20
USER_AGENT = "t0dqm-online-sync/1"
MAX_DEPTH = 16  # the online GUI's tree is a few levels deep; deeper means a listing that loops
# -- HTTP -----------------------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            for key, value in attrs:
                if key == "href" and value:
                    self.hrefs.append(value)


def parse_listing(html: str, base_url: str) -> tuple[list[str], list[str]]:
    """(subdirectory URLs, file URLs) of an HTML index page, only entries strictly below ``base_url``.

    Sort links (``?C=N;O=D``), the parent link and links elsewhere are ignored.
    """
    parser = _Links()
    parser.feed(html)
    base = base_url if base_url.endswith("/") else base_url + "/"
    dirs: list[str] = []
    files: list[str] = []
    for href in parser.hrefs:
        url = urllib.parse.urljoin(base, href)
        parts = urllib.parse.urlsplit(url)
        if parts.query or parts.fragment:
            continue
        url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        if not url.startswith(base) or url == base:
            continue
        rest = urllib.parse.unquote(url[len(base) :])
        if not rest or ".." in rest.split("/") or rest.count("/") > (1 if rest.endswith("/") else 0):
            continue  # only direct children
        (dirs if url.endswith("/") else files).append(url)
    return sorted(set(dirs)), sorted(set(files))


def make_ssl_context(cert: str = "", key: str = "", ca: str = "") -> ssl.SSLContext:
    """Client TLS context: system CAs or ``ca`` (file or directory), optional X509 client cert/key."""
    ctx = ssl.create_default_context()
    if ca:
        if os.path.isdir(ca):
            ctx.load_verify_locations(capath=ca)
        else:
            ctx.load_verify_locations(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key or None)
    return ctx


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to the same scheme, host and port (a listing must not send us elsewhere)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirect to another host refused: {newurl}", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Http:
    """Small urllib client with a timeout and an optional TLS context (thread-safe: no shared state)."""

    def __init__(self, timeout: float, context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        handlers: list[Any] = [_SameHostRedirects()]
        if context:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self.opener = urllib.request.build_opener(*handlers)

    def _request(self, url: str, method: str = "GET") -> Any:
        req = urllib.request.Request(  # noqa: S310 - sync.url (operator's) or links under it
            url,
            method=method,
            headers={"User-Agent": USER_AGENT},
        )
        return self.opener.open(req, timeout=self.timeout)

    def text(self, url: str) -> str:
        with self._request(url) as resp:
            charset = resp.headers.get_content_charset() or "utf-8"
            return resp.read().decode(charset, errors="replace")

    def head(self, url: str) -> tuple[int | None, float | None]:
        with self._request(url, "HEAD") as resp:
            length = resp.headers.get("Content-Length")
            modified = resp.headers.get("Last-Modified")
        size = int(length) if length is not None and length.isdigit() else None
        mtime = email.utils.parsedate_to_datetime(modified).timestamp() if modified else None
        return size, mtime

    def download(self, url: str, target: Path, mtime: float | None, listed: int | None = None) -> int:
        """GET into a hidden temp file next to ``target``, set mtime, rename; return the bytes written.
        OSError when the bytes served differ from Content-Length or from the ``listed`` size."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with self._request(url) as resp, open(tmp, "wb") as out:
                expected = resp.headers.get("Content-Length")
                size = 0
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected is not None and expected.isdigit() and int(expected) != size:
                raise OSError(f"{url}: got {size} bytes, Content-Length said {expected}")
            if listed is not None and listed != size:
                raise OSError(f"{url}: got {size} bytes, the listing (HEAD) said {listed}")
            if mtime is not None:
                os.utime(tmp, (mtime, mtime))
            os.replace(tmp, target)
            tmp = None  # type: ignore[assignment]
            return size
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)


# -- online sync ----------------------------------------------------------------------------------


@dataclass
class SyncReport:
    downloaded: list[str] = field(default_factory=list)
    up_to_date: int = 0
    skipped_archived: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _walk_remote(http: Http, url: str, pool: ThreadPoolExecutor, report: SyncReport) -> list[str]:
    """Every file URL below ``url`` (directories listed in parallel, level by level)."""
    files: list[str] = []
    level = [url if url.endswith("/") else url + "/"]
    seen: set[str] = set()
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            report.errors.append(
                f"{url}: listing deeper than {MAX_DEPTH} levels (a loop?): not followed "
                f"({len(level)} folder(s) such as {level[0]})"
            )
            break

        def listing(u: str) -> tuple[str, tuple[list[str], list[str]] | None]:
            try:
                return u, parse_listing(http.text(u), u)
            except (OSError, urllib.error.URLError) as exc:
                report.errors.append(f"{u}: {exc}")
                log.warning("listing %s failed: %s", u, exc)
                return u, None

        next_level: list[str] = []
        for _u, result in pool.map(listing, level):
            if result is None:
                continue
            subdirs, found = result
            files.extend(found)
            next_level.extend(d for d in subdirs if d not in seen)
            seen.update(subdirs)
        level = next_level
    return files


def online_sync(
    url: str,
    dest: str | os.PathLike[str],
    *,
    connections: int = 5,
    timeout: float = 30,
    context: ssl.SSLContext | None = None,
    suffixes: Iterable[str] = (".root",),
) -> SyncReport:
    """Mirror the listing at ``url`` into ``dest`` (see module doc); return what happened."""
    http = Http(timeout, context)
    root = Path(dest)
    base = url if url.endswith("/") else url + "/"
    report = SyncReport()
    wanted = tuple(suffixes)
    with ThreadPoolExecutor(max_workers=max(1, connections), thread_name_prefix="online-sync") as pool:
        files = [f for f in _walk_remote(http, base, pool, report) if not wanted or f.endswith(wanted)]

        def one(file_url: str) -> tuple[str, str, int, str | None]:
            rel = urllib.parse.unquote(file_url[len(base) :])
            target = root / rel
            try:
                size, mtime = http.head(file_url)
                try:
                    st = target.stat()
                    local: policy.FileInfo | None = policy.FileInfo(rel, st.st_size, st.st_mtime)
                except FileNotFoundError:
                    local = None
                info = target.with_name(target.name + ".dqminfo").exists()
                action = policy.online_sync_action(local, size, mtime, info)
                if action != policy.DOWNLOAD:
                    return rel, action, 0, None
                return rel, action, http.download(file_url, target, mtime, size), None
            except (OSError, urllib.error.URLError, ValueError) as exc:
                return rel, "error", 0, f"{file_url}: {exc}"

        for rel, action, nbytes, error in pool.map(one, files):
            if error:
                report.errors.append(error)
                log.warning("online sync: %s", error)
            elif action == policy.DOWNLOAD:
                report.downloaded.append(rel)
                report.bytes += nbytes
            elif action == policy.SKIP_ARCHIVED:
                report.skipped_archived.append(rel)
            else:
                report.up_to_date += 1
    return report


def x509_files(
    cfg: config.Sync | Mapping[str, Any], environ: dict[str, str] | os._Environ[str] = os.environ
) -> tuple[str, str, str]:
    """(cert, key, CA) for https: the ``sync`` settings, else the grid environment as the original daemon read
    it: ``X509_USER_PROXY`` (certificate and key in one file) or ``X509_USER_CERT``/``X509_USER_KEY``, and
    ``X509_CERT_DIR`` for the CAs (empty CA: the system's)."""
    cert, key, ca = cfg.get("cert", ""), cfg.get("key", ""), cfg.get("ca", "")
    if not cert:
        proxy = environ.get("X509_USER_PROXY", "")
        if proxy and os.path.isfile(proxy):
            cert, key = proxy, proxy
        elif environ.get("X509_USER_CERT"):
            cert, key = environ["X509_USER_CERT"], environ.get("X509_USER_KEY", "")
    if not ca:
        ca = environ.get("X509_CERT_DIR", "")
    return cert, key, ca


def online_sync_from_settings(settings: config.Settings) -> SyncReport | None:
    """Run the online sync as configured (``sync`` table); None when no URL is configured."""
    cfg = settings.sync
    if not cfg.url:
        return None
    context = None
    if cfg.url.startswith("https:"):
        context = make_ssl_context(*x509_files(cfg))
    return online_sync(
        cfg.url,
        settings.repository / cfg.dest,
        connections=int(cfg.connections),
        timeout=settings.timeout("http"),
        context=context,
        suffixes=cfg.suffixes,
    )


# -- partial mirror -------------------------------------------------------------------------------


@dataclass
class MirrorReport:
    copied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    selected: int = 0
    used: dict[str, int] = field(default_factory=dict)
    quotas: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _listing(top: Path, suffix: str | None = None) -> list[policy.FileInfo]:
    out = []
    for dirpath, dirnames, names in os.walk(top):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in names:
            if name.startswith(".") or (suffix and not name.endswith(suffix)):
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append(policy.FileInfo(path.relative_to(top).as_posix(), st.st_size, st.st_mtime))
    return out


def partial_mirror(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    folders: dict[str, int | None],
    total: int | None,
    *,
    settings: config.Settings,
    catalog: Any = None,
    timeout: float = 600,
) -> MirrorReport:
    """Bring ``dest`` to the selection of :func:`plan_mirror` over the ROOT files of ``source``."""
    src, dst = Path(source), Path(dest)
    dst.mkdir(parents=True, exist_ok=True)
    deleter.check_target(str(dst / "probe"), settings)  # fail early, before copying, if not deletable
    plan = policy.plan_mirror(_listing(src, ".root"), _listing(dst), folders, total)
    report = MirrorReport(selected=len(plan.selected), used=plan.used, quotas=plan.quotas)
    for rel in plan.delete:  # make room first
        try:
            deleter.delete(
                str(dst / rel),
                rule="partial-mirror",
                reason="no longer selected for the mirror",
                settings=settings,
                catalog=catalog,
            )
            report.deleted.append(rel)
        except (OSError, deleter.DeletionRefused) as exc:
            report.errors.append(f"{rel}: {exc}")
    for rel in plan.copy:
        try:
            storage.copy(str(src / rel), str(dst / rel), timeout=timeout, force=True)  # copystat keeps mtime
            report.copied.append(rel)
        except (OSError, storage.StorageError) as exc:
            report.errors.append(f"{rel}: {exc}")
    remove_empty_dirs(dst)
    return report


def remove_empty_dirs(top: Path) -> None:
    """Remove empty folders below ``top`` (not ``top`` itself)."""
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        if Path(dirpath) != top:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def partial_mirror_from_settings(settings: config.Settings, catalog: Any = None) -> MirrorReport | None:
    cfg = settings.mirror
    if not cfg.dest:
        return None
    folders = {k: (int(v) if v else None) for k, v in cfg.folders.items()}
    total = int(cfg.quota) if cfg.quota else None
    return partial_mirror(
        settings.repository,
        cfg.dest,
        folders,
        total,
        settings=settings,
        catalog=catalog,
        timeout=settings.timeout("copy"),
    )


# -- steps (the tasks of t0dqm.tasks.sync call these) ----------------------------------------------------


def run_online_sync(ctx: Context) -> Outcome:
    """Mirror the online GUI's listing into the repository (one runner at a time)."""
    try:
        with ctx.lease("online-sync", ctx.settings.tasks.long_time_limit):
            report = online_sync_from_settings(ctx.settings)
    except LeaseBusy:
        return Outcome(None)
    if report is None:
        return Outcome(None)
    ctx.log(
        "online-sync",
        downloaded=len(report.downloaded),
        up_to_date=report.up_to_date,
        skipped_archived=len(report.skipped_archived),
        errors=len(report.errors),
        bytes=report.bytes,
    )
    return Outcome(report.as_dict())


def run_partial_mirror(ctx: Context) -> Outcome:
    """Bring the size-limited mirror up to date (one runner at a time)."""
    try:
        with ctx.lease("partial-mirror", ctx.settings.tasks.long_time_limit):
            report = partial_mirror_from_settings(ctx.settings, catalog=ctx.catalog)
    except LeaseBusy:
        return Outcome(None)
    if report is None:
        return Outcome(None)
    ctx.log(
        "partial-mirror", copied=len(report.copied), deleted=len(report.deleted), errors=len(report.errors)
    )
    return Outcome(report.as_dict())
