"""t0dqm: CMS DQM and Tier-0 storage file operations as Celery tasks."""

__version__ = "0.1.0"
