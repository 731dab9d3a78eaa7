"""The beat schedule (the design's ``beat_schedule.py``): a thin file over :mod:`t0dqm.beat`, where the
schedule is a pure function of the settings."""

from t0dqm.beat import build

__all__ = ["build"]
