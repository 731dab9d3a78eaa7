"""Rucio policy package for the test server: CMS-style names (mixed-case RSEs, '#' in block names).

Loaded by the Rucio server the tests start (``[policy] package = t0dqm_rucio_policy``); only the schema
is customised, everything else falls back to Rucio's generic policy.
"""

SUPPORTED_VERSION = [">=41.0"]
