"""Celery tasks, one module per family of steps (see ARCHITECTURE.md's task map)."""
