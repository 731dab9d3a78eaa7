"""Tier-0 streamer units (table ``streamer_units``): what the streamer cleanup did with each unit."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import select

from t0dqm.catalog.db import Catalog, streamer_units
from t0dqm.policies.streamer import Deletion


def record_units(catalog: Catalog, deletions: Iterable[Deletion], dry_run: bool) -> None:
    """Insert or update one row per deleted unit (state ``deleted``, or ``dry-run``), in one transaction."""
    now = time.time()
    state = "dry-run" if dry_run else "deleted"
    with catalog.begin() as conn:
        for d in deletions:
            row = conn.execute(
                select(streamer_units.c.id).where(
                    streamer_units.c.label == d.label,
                    streamer_units.c.stream == d.stream,
                    streamer_units.c.run == d.run,
                )
            ).first()
            values = {
                "files": d.files,
                "bytes": d.bytes,
                "newest_mtime": d.newest_mtime[0],
                "state": state,
                "rule": d.rule,
                "updated_at": now,
            }
            if row is None:
                conn.execute(
                    streamer_units.insert().values(label=d.label, stream=d.stream, run=d.run, **values)
                )
            else:
                conn.execute(streamer_units.update().where(streamer_units.c.id == row.id).values(**values))
