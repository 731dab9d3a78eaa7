"""File formats and names: pure readers and writers, no catalog and no Celery."""
