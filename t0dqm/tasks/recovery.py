"""Where the recoverer registry used to live; kept so task modules not yet moved still import it.

The registry (``Resume``, ``recoverer``, ``RECOVERERS``) is :mod:`t0dqm.steps.reconcile`; the stale-row
queries (``stale_ids``, ``dead_claim_ids``) are :mod:`t0dqm.catalog.recovery`.
"""

from __future__ import annotations

from t0dqm.catalog.recovery import dead_claim_ids, stale_ids
from t0dqm.steps.reconcile import RECOVERERS, Recoverer, Resume, recoverer

__all__ = ["RECOVERERS", "Recoverer", "Resume", "dead_claim_ids", "recoverer", "stale_ids"]
