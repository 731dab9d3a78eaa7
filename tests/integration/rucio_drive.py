"""Rucio core actions for the tests, run in the Rucio server's venv (RucioServer.drive).

Usage: python rucio_drive.py ACTION JSON_ARGS; prints one JSON line.
- stuck {"scope", "names": [...], "rse", "error"}: each file's lock at the RSE fails as a transfer
  would (rucio.core.lock.failed_transfer), which puts the rule into STUCK.
- repair {"rule_id"}: what the judge-repairer does with a STUCK rule (rucio.core.rule.repair_rule).
- purge_rule {"rule_id"}: the rule is removed at once, as the judge-cleaner does once a deleted rule
  expires (the REST API only schedules the deletion an hour ahead).
"""

import json
import sys

from rucio.common.types import InternalScope
from rucio.core.lock import failed_transfer
from rucio.core.rse import get_rse_id
from rucio.core.rule import delete_rule, repair_rule
from rucio.db.sqla.constants import DatabaseOperationType
from rucio.db.sqla.session import db_session


def stuck(scope: str, names: list, rse: str, error: str = "test transfer failure") -> dict:
    with db_session(DatabaseOperationType.WRITE) as session:
        rse_id = get_rse_id(rse, session=session)
        for name in names:
            failed_transfer(InternalScope(scope), name, rse_id, error_message=error, session=session)
    return {"stuck": len(names)}


def purge_rule(rule_id: str) -> dict:
    with db_session(DatabaseOperationType.WRITE) as session:
        delete_rule(rule_id=rule_id, soft=False, ignore_rule_lock=True, session=session)
    return {"purged": rule_id}


def repair(rule_id: str) -> dict:
    with db_session(DatabaseOperationType.WRITE) as session:
        repair_rule(rule_id=rule_id, session=session)
    return {"repaired": rule_id}


ACTIONS = {"stuck": stuck, "purge_rule": purge_rule, "repair": repair}

if __name__ == "__main__":
    print(json.dumps(ACTIONS[sys.argv[1]](**json.loads(sys.argv[2]))))
