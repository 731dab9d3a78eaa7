"""Celery-free I/O of each step: takes settings and a catalog, returns the next steps to send."""
