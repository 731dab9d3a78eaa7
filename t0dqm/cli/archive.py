"""CLI commands (archive)."""

from __future__ import annotations

__all__: list[str] = []
