"""The catalog schema: alembic revisions shipped in t0dqm/catalog/migrations, applied under a lock.

``upgrade`` creates or migrates a catalog to this t0dqm's head revision. On PostgreSQL it runs in one
transaction under ``pg_advisory_xact_lock``, so any number of concurrent ``t0dqm db upgrade`` runs are
safe (the first migrates, the others wait and find the work done); on SQLite the transaction starts
with ``BEGIN IMMEDIATE``, which serialises writers the same way. A catalog from before alembic
(``meta.schema_version`` 1 or 2) is stamped at the matching revision first, then migrated.

``ensure`` is what processes call on first use: the embedded SQLite catalog creates and migrates its
schema by itself; any other database must already be at the head revision (``t0dqm db upgrade``),
otherwise ``SchemaMismatch`` names both revisions.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.engine import Connection

# pg_advisory_xact_lock key of schema changes (any 64-bit constant private to t0dqm: "t0dqmsch").
LOCK_KEY = int.from_bytes(b"t0dqmsch", "big") - 2**63
# Hand-written schema versions of t0dqm before alembic -> the revision with the same tables.
LEGACY_REVISIONS = {1: "0001_baseline", 2: "0002_t0_outputs"}
# Longest wait for another upgrader's lock and its migration (PostgreSQL).
LOCK_TIMEOUT_MS = 600_000


class SchemaMismatch(RuntimeError):
    """The catalog is not at the schema revision this t0dqm was built for."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configuration for the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", "t0dqm.catalog:migrations")
    cfg.attributes["connection"] = connection
    return cfg


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The revision this t0dqm needs."""
    rev = scripts().get_current_head()
    assert rev is not None, "t0dqm/catalog/migrations has no revision"
    return rev


def legacy_version(conn: Connection) -> int | None:
    """``meta.schema_version`` of a catalog created before alembic, else None."""
    if not inspect(conn).has_table("meta"):
        return None
    from t0dqm.catalog.db import meta

    value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    return int(value) if value is not None and str(value).isdigit() else None


def current(conn: Connection) -> str | None:
    """The catalog's revision: alembic's, or the one a pre-alembic schema version corresponds to."""
    rev = MigrationContext.configure(conn).get_current_revision()
    if rev is not None:
        return rev
    legacy = legacy_version(conn)
    if legacy is None:
        return None
    if legacy not in LEGACY_REVISIONS:
        raise SchemaMismatch(f"catalog has an unknown pre-alembic schema version {legacy}")
    return LEGACY_REVISIONS[legacy]


def _known(rev: str | None) -> bool:
    if rev is None:
        return True
    try:
        return scripts().get_revision(rev) is not None
    except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown id
        return False


def _newer_message(rev: str, url: str) -> str:
    return (
        f"catalog {url} is at schema revision {rev}, unknown to this t0dqm (which needs {head()}): "
        "a newer t0dqm migrated it; install that version on this host"
    )


def upgrade(engine: Engine) -> str:
    """Create or migrate the catalog to the head revision; safe concurrently and repeatedly."""
    url = engine.url.render_as_string(hide_password=True)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
            conn.execute(text(f"SET LOCAL statement_timeout = {LOCK_TIMEOUT_MS}"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        rev = current(conn)
        if not _known(rev):
            raise SchemaMismatch(_newer_message(str(rev), url))
        cfg = alembic_config(conn)
        if rev is not None and MigrationContext.configure(conn).get_current_revision() is None:
            command.stamp(cfg, rev)  # a pre-alembic catalog: record where it stands
        elif rev is None and inspect(conn).has_table("files"):
            raise SchemaMismatch(
                f"catalog {url} has tables but no schema version: not a t0dqm catalog, "
                "or one whose creation was interrupted; stamp it by hand (alembic stamp)"
            )
        command.upgrade(cfg, "head")
    return head()


def check(engine: Engine) -> str:
    """The catalog's revision if it is this t0dqm's head; SchemaMismatch naming both otherwise."""
    url = engine.url.render_as_string(hide_password=True)
    with engine.connect() as conn:
        rev = current(conn)
    want = head()
    if rev == want:
        return rev
    if not _known(rev):
        raise SchemaMismatch(_newer_message(str(rev), url))
    have = rev or "none (empty catalog)"
    raise SchemaMismatch(
        f"catalog {url} is at schema revision {have}, this t0dqm needs {want}: "
        "run `t0dqm db upgrade` with this version first"
    )


def ensure(engine: Engine, read_engine: Engine | None = None) -> str:
    """SQLite creates and migrates its own schema; any other catalog must be at head already.
    ``read_engine`` (SQLite: one that does not take the write lock) serves the first look."""
    try:
        return check(read_engine or engine)
    except SchemaMismatch:
        if engine.dialect.name != "sqlite":
            raise
    return upgrade(engine)
