"""Estimation stage (issue 8): window counts, churn and population size with uncertainty, from stored sketches.

Public API:

- ``estimate_run(warehouse, run_id)``: compute and store (idempotently) the run's ``window_counts``,
  ``capture_histories`` and ``region_estimates`` (migration ``warehouse/migrations/100_estimation.sql``);
- ``estimation.capture``: Chapman and log-linear estimators over any capture-history table;
- ``estimation.cli``: ``estimate`` (``pointcount estimate --histories FILE.csv``) and ``keys_app``
  (``pointcount keys``);
- ``estimation.privacy``: the linkability audit used to show destroyed keys unlink the stored sketches.

See docs/estimation.md and docs/privacy.md.
"""

from estimation.capture import PopulationEstimate, chapman, estimate, loglinear
from estimation.run import compute_run, estimate_run

__all__ = ["PopulationEstimate", "chapman", "compute_run", "estimate", "estimate_run", "loglinear"]
