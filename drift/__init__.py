"""drift: measure position-dependent supervision drift in on-policy distillation (OPD).

Pipeline (one subpackage or module per stage):

- ``drift.collect``: sample student rollouts, score them with student and teacher, write per-token parquet.
- ``drift.stats``: position bins with rollout-level bootstrap intervals, decay fits, direction tests.
- ``drift.schedules``: token-weight schedules (IW-OPD, masks, fitted) and their export to verl / TRL / tinker.

Datasets are folders of parquet parts described by ``drift.schema``; ``drift.store.open_dataset`` reads them.
"""

__version__ = "0.1.0"
