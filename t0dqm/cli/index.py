"""CLI commands: upload, index, legacy import."""

from __future__ import annotations

__all__: list[str] = []
