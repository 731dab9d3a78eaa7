"""The beat schedule: what cron used to run, as a pure function of the settings (no task is imported).

The Celery app (``t0dqm.celery``) sets ``beat_schedule`` from :func:`build`; the elected scheduler
(``t0dqm.beat_election``) sends it. Entries name their tasks by ``name=``.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from t0dqm.queues import collect_queue

COLLECT_INTERVAL = 10.0
CLEAN_INTERVAL = 4 * 3600.0
ONLINE_SYNC_INTERVAL = 4 * 3600.0
MIRROR_INTERVAL = 3 * 3600.0


def build(settings: Any) -> dict[str, dict[str, Any]]:
    """Schedule entries for the settings' flavour; optional families only when enabled."""
    reconcile_every = settings.reconcile.interval
    schedule: dict[str, dict[str, Any]] = {
        "reconcile": {"task": "t0dqm.tasks.ops.reconcile", "schedule": float(reconcile_every)},
        "beat-heartbeat": {"task": "t0dqm.tasks.ops.beat_heartbeat", "schedule": 30.0},
    }
    optional: dict[str, dict[str, Any]] = {
        "receive-scan": {
            "task": "t0dqm.tasks.receive.scan",
            "schedule": float(settings.receive.scan_interval),
        },
        "create-info": {"task": "t0dqm.tasks.receive.create_info", "schedule": 4 * 3600.0},
        "index-merge": {"task": "t0dqm.tasks.index.merge", "schedule": 10.0},
        "index-delete-runs": {"task": "t0dqm.tasks.index.delete_runs", "schedule": 900.0},
        "version-control": {"task": "t0dqm.tasks.cleanup.version_control", "schedule": 30.0},
        "quota-control": {"task": "t0dqm.tasks.cleanup.quota_control", "schedule": 240.0},
        "zip-freeze": {"task": "t0dqm.tasks.archive.freeze", "schedule": 900.0},
        "tape-verify": {"task": "t0dqm.tasks.tape.verify_due", "schedule": 900.0},
        "daily-clean": {"task": "t0dqm.tasks.tape.clean_zips", "schedule": crontab(hour=2, minute=17)},
        "index-backup": {"task": "t0dqm.tasks.tape.backup_index", "schedule": crontab(hour=7, minute=0)},
        "health": {"task": "t0dqm.tasks.health.check", "schedule": 300.0},
        "health-notify": {"task": "t0dqm.tasks.health.notify", "schedule": 60.0},
        "streamer-cleanup": {
            "task": "t0dqm.tasks.streamer.streamer_cleanup",
            "schedule": crontab(hour=5, minute=0),
        },
        "t0-retention": {
            "task": "t0dqm.tasks.streamer.retention_cleanup",
            "schedule": crontab(hour=6, minute=0),
        },
        "t0-rules-poll": {
            "task": "t0dqm.tasks.tier0.poll_rules",
            "schedule": float(settings.rucio.poll_interval),
        },
        "sm-cleanup-age": {
            "task": "t0dqm.tasks.streamer.sm_cleanup",
            "kwargs": {"mode": "age"},
            "schedule": crontab(hour="3,15", minute=30),
        },
        "sm-cleanup-occupancy": {
            "task": "t0dqm.tasks.streamer.sm_cleanup",
            "kwargs": {"mode": "occupancy"},
            "schedule": 900.0,
        },
    }
    enabled = set(settings.beat.get("enabled", list(optional)))
    if not settings.streamer.enabled:
        enabled.discard("streamer-cleanup")
    if not settings.retention.enabled:
        enabled.discard("t0-retention")
    if not settings.rucio.url:
        enabled.discard("t0-rules-poll")
    if not settings.storage_manager.enabled:
        enabled.discard("sm-cleanup-age")
        enabled.discard("sm-cleanup-occupancy")
    if not settings.run_deletion.enabled:
        enabled.discard("index-delete-runs")
    schedule.update({name: entry for name, entry in optional.items() if name in enabled})
    schedule.update(producer_schedule(settings))
    schedule.update(sync_schedule(settings))
    # [beat.every] zip_freeze = 5  -> run that entry every 5 s (demo, chaos, tests)
    for key, seconds in settings.beat.every.items():
        name = key.replace("_", "-")
        if name in schedule:
            schedule[name] = dict(schedule[name], schedule=float(seconds))
    return schedule


def producer_schedule(settings: Any) -> dict[str, dict[str, Any]]:
    """Beat entries for every producer host in the ``producers`` setting (collect 10 s, clean 4 h), each on
    the host's own queue ``collect.<host>``."""
    entries: dict[str, dict[str, Any]] = {}
    hosts = sorted({p["host"] for p in settings.producers})
    for host in hosts:
        queue = collect_queue(host, settings)
        entries[f"collect-{host}"] = {
            "task": "t0dqm.tasks.collect.collect",
            "schedule": COLLECT_INTERVAL,
            "args": (host,),
            "options": {"queue": queue, "expires": COLLECT_INTERVAL * 6},
        }
        entries[f"clean-producer-{host}"] = {
            "task": "t0dqm.tasks.collect.clean_producer",
            "schedule": CLEAN_INTERVAL,
            "args": (host,),
            "options": {"queue": queue, "expires": 3600.0},
        }
    return entries


def sync_schedule(settings: Any) -> dict[str, dict[str, Any]]:
    """Beat entries for the configured sync families (online sync 4 h, partial mirror 3 h)."""
    entries: dict[str, dict[str, Any]] = {}
    if settings.sync.url:
        entries["online-sync"] = {"task": "t0dqm.tasks.sync.online_sync", "schedule": ONLINE_SYNC_INTERVAL}
    if settings.mirror.dest:
        entries["partial-mirror"] = {"task": "t0dqm.tasks.sync.partial_mirror", "schedule": MIRROR_INTERVAL}
    return entries
