"""State names shared by tasks, policies and the CLI (the catalog stores these strings)."""

from __future__ import annotations

# files.state
RECEIVED = "received"  # filed in the repository, not yet in an archive
ZIPPED = "zipped"  # member of an archive (see archives.state for how safe it is)
REMOVED = "removed"  # ROOT file deleted by version or quota control; row and .dqminfo stay

# files.index_state
INDEX_PENDING = "pending"
INDEX_PARTIAL = "partial"  # partial index written, waiting for the merge
INDEXED = "indexed"
INDEX_SKIPPED = "skipped"  # not for the index (create-info files, superseded versions)
INDEX_FAILED = "failed"

# archives.state
OPEN = "open"
FROZEN = "frozen"
COPIED = "copied"  # at the endpoint, size and checksum confirmed at copy time
VERIFIED = "verified"  # re-checked after the verify delay
ON_TAPE = "on_tape"  # endpoint reports a tape copy
CLEANED = "cleaned"  # local zip removed
FAILED = "failed"
CONFLICT = "conflict"

ARCHIVE_STATES = (OPEN, FROZEN, COPIED, VERIFIED, ON_TAPE, CLEANED, FAILED, CONFLICT)


def archive_safe_states(require_tape: bool) -> tuple[str, ...]:
    """Archive states in which the archive's members are safe elsewhere (may be deleted locally)."""
    return (ON_TAPE, CLEANED) if require_tape else (VERIFIED, ON_TAPE, CLEANED)
