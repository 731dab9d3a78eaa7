"""Rucio's generic schema with the name patterns CMS uses.

- RSE names such as ``T0_CH_CERN_Disk`` (mixed case; the generic schema wants upper case only).
- DID names: CMS files (``/store/...root``), datasets (``/PD/Era-v1/RAW``) and blocks
  (``/PD/Era-v1/RAW#<uuid>``), so ``#`` is allowed after the first character.
"""

import copy

from rucio.common.schema import generic
from rucio.common.schema.generic import *  # noqa: F403 - every other definition stays generic

_RSE_PATTERN = "^([A-Za-z0-9]+([_-][A-Za-z0-9]+)*)$"

RSE = dict(generic.RSE, pattern=_RSE_PATTERN)
NAME = dict(generic.NAME, pattern=r"^[/A-Za-z0-9][/A-Za-z0-9\.\-_#]*$")
ATTACHMENT = copy.deepcopy(generic.ATTACHMENT)
ATTACHMENT["properties"]["rse"]["pattern"] = _RSE_PATTERN

SCHEMAS = dict(generic.SCHEMAS, name=NAME, rse=RSE, attachment=ATTACHMENT)
