"""The pure scheduler: a cluster snapshot and a job in, a Plan out (imports only mxvm.models).

Pipeline: reconcile.py (what to place, stop, keep) → candidates.py (shuffled walk, power-of-k
choice) → filters.py (a rejection reason per node) → scorers.py (binpack, spread) →
devices.py / ports.py (concrete ids and host ports) → Plan, whose `failures` explains why
nodes were rejected.

Candidate limit (config.py): a placement compares up to `limit` feasible nodes found along a
walk shuffled by a PRNG seeded from the evaluation id (Nomad's LimitIterator). Automatic limit:
every node when there are at most 64, else max(16, 2 * ceil(log2(n))), i.e. 28 for 10,000.
"""

from mxvm.scheduler.config import SchedulerConfig, candidate_limit
from mxvm.scheduler.schedule import schedule

__all__ = ["SchedulerConfig", "candidate_limit", "schedule"]
