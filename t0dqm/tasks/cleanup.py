"""Tasks: cleanup."""

from __future__ import annotations

from t0dqm.celery import app  # noqa: F401
