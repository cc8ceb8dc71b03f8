"""The pure scheduler: a cluster snapshot and a job in, a Plan out (imports only mxvm.models).

Pipeline: reconcile.py (what to place, stop, keep) → candidates.py (shuffled walk, power-of-k
choice) → filters.py (a rejection reason per node) → scorers.py (binpack, spread) →
devices.py / ports.py (concrete ids and host ports) → Plan, whose `failures` explains why
nodes were rejected. See config.py for the candidate limit.
"""

from mxvm.scheduler.config import SchedulerConfig, candidate_limit
from mxvm.scheduler.schedule import schedule

__all__ = ["SchedulerConfig", "candidate_limit", "schedule"]
