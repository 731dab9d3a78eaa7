"""The Tier-0 tasks moved to tasks/streamer, sm, retention and placement keep their names and queues."""

from __future__ import annotations

from t0dqm import config

# name -> (module that defines it now, queue it had before the split: messages already queued still match);
# test_dqm_routes.py checks them with the DQM tasks
TIER0_TASKS = {
    "t0dqm.tasks.streamer.streamer_cleanup": ("t0dqm.tasks.streamer", "cleanup"),
    "t0dqm.tasks.streamer.sm_cleanup": ("t0dqm.tasks.sm", "cleanup"),
    "t0dqm.tasks.streamer.retention_cleanup": ("t0dqm.tasks.retention", "cleanup"),
    "t0dqm.tasks.tier0.register_output": ("t0dqm.tasks.placement", "ops"),
    "t0dqm.tasks.tier0.poll_rules": ("t0dqm.tasks.placement", "ops"),
}


# ------------------------------------------------------------------------------- beat entry and routing


def test_rule_poll_is_scheduled_only_with_rucio_and_tasks_route_to_ops() -> None:
    import beat_schedule
    from t0dqm.celery import route_for_task

    without = beat_schedule.build(config.load(None, environ={}))
    assert "t0-rules-poll" not in without
    with_rucio = beat_schedule.build(
        config.load(
            None, environ={"T0DQM_RUCIO__URL": "https://rucio.example", "T0DQM_RUCIO__POLL_INTERVAL": "120"}
        )
    )
    assert with_rucio["t0-rules-poll"] == {"task": "t0dqm.tasks.tier0.poll_rules", "schedule": 120.0}
    settings = config.load(None, environ={"T0DQM_FLAVOUR": "offline"})
    assert route_for_task("t0dqm.tasks.tier0.register_output", settings) == "offline.ops"
    assert route_for_task("t0dqm.tasks.tier0.poll_rules", settings) == "offline.ops"
