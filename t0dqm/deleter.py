"""The one guarded deleter: every deletion of data in t0dqm goes through delete().

It refuses paths outside the configured roots (symlinks resolved), refuses a repository ROOT file whose
archive is not safe on tape (unless configured otherwise), supports dry-run, and writes an audit row
(what, size, checksum, rule, time, host) for every deletion, real or dry.
"""

from __future__ import annotations

import os
from pathlib import Path

from t0dqm import config, storage
from t0dqm.catalog import audit
from t0dqm.catalog.db import Catalog, get_catalog
from t0dqm.catalog.states import archive_safe_states


class DeletionRefused(PermissionError):
    """The guard refused a deletion; the message says why."""


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def allowed_roots(settings: config.Settings) -> list[str]:
    extra = settings.deletion.extra_roots
    return [str(p) for p in settings.deletion_roots] + list(extra)


def check_target(target: str, settings: config.Settings) -> str:
    """Return the canonical target if it lies inside an allowed root, else raise DeletionRefused."""
    roots = allowed_roots(settings)
    if storage.is_remote(target):
        _server, path = storage.split_url(target)
        if ".." in Path(path).parts:
            raise DeletionRefused(f"refusing {target}: '..' in path")
        for root in roots:
            if storage.is_remote(root) and target.startswith(root.rstrip("/") + "/"):
                return target
        raise DeletionRefused(f"refusing {target}: outside the configured roots")
    resolved = Path(os.path.realpath(target))
    for root in roots:
        if not storage.is_remote(root) and _inside(resolved, Path(os.path.realpath(root))):
            if resolved == Path(os.path.realpath(root)):
                raise DeletionRefused(f"refusing {target}: is a root itself")
            return str(resolved)
    raise DeletionRefused(f"refusing {target}: resolves to {resolved}, outside the configured roots")


def _check_archived(catalog: Catalog, resolved: str, settings: config.Settings) -> None:
    """A repository ROOT file may go only when its archive is safe on tape."""
    repo = Path(os.path.realpath(settings.repository))
    path = Path(resolved)
    if path.suffix != ".root" or not _inside(path, repo):
        return
    if not settings.deletion.require_verified:
        return
    rel = str(path.relative_to(repo))
    with catalog.read() as conn:
        row = audit.file_archive_state(conn, rel)
    if row is None:
        raise DeletionRefused(f"refusing {resolved}: not in the catalog")
    safe = archive_safe_states(settings.archive.require_tape)
    if row.state not in safe:
        raise DeletionRefused(f"refusing {resolved}: archive not verified on tape (state {row.state})")


def delete(
    target: str,
    *,
    rule: str,
    reason: str | None = None,
    dry_run: bool | None = None,
    size: int | None = None,
    checksum: str | None = None,
    entity_id: int | None = None,
    catalog: Catalog | None = None,
    settings: config.Settings | None = None,
) -> bool:
    """Delete one file after the guard's checks; True if it was deleted (or would be, in dry-run).

    False when the file was already gone (still audited). Raises DeletionRefused when refused.
    """
    settings = settings or config.get()
    catalog = catalog or get_catalog(settings.catalog_url)
    if dry_run is None:
        dry_run = bool(settings.deletion.dry_run)
    canonical = check_target(target, settings)
    if not storage.is_remote(canonical):
        _check_archived(catalog, canonical, settings)
        if os.path.isdir(canonical):
            raise DeletionRefused(f"refusing {target}: is a directory")
    timeout = settings.timeout("io")
    if size is None:
        st = storage.stat(canonical, timeout)
        size = st.size if st else None
    existed = storage.stat(canonical, timeout) is not None if dry_run else storage.remove(canonical, timeout)
    with catalog.begin() as conn:
        catalog.audit(
            conn,
            entity="path",
            entity_id=entity_id,
            action="dry-run-delete" if dry_run else ("delete" if existed else "delete-missing"),
            path=canonical,
            size=size,
            checksum=checksum,
            rule=rule,
            detail=reason,
        )
    return existed
