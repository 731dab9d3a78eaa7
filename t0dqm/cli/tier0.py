"""CLI commands (tier0)."""

from __future__ import annotations

__all__: list[str] = []
