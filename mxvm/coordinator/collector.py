"""The leader's garbage collector, as Nomad's: what is long over is deleted, so that Postgres,
`mxvm job ls` and the node subnet pool do not grow with every job ever run and every host
ever seen. Finished batch jobs and stopped, dead jobs go `job_gc_threshold_s` after they
ended, with their allocations and evaluations; finished evaluations (but each job's newest)
after `eval_gc_threshold_s`; nodes down for `node_gc_threshold_s`, returning their subnets to
the pool (an agent that comes back after that registers as a new node)."""

from __future__ import annotations

import logging

from mxvm.config import CoordinatorSettings
from mxvm.errors import BackendUnavailable
from mxvm.store import Store

log = logging.getLogger(__name__)

BATCH = 1000  # rows per kind per round: a backlog is worked off over rounds, in short statements


class Collector:
    def __init__(self, store: Store, settings: CoordinatorSettings) -> None:
        self.store = store
        self.settings = settings

    async def run_once(self) -> bool:
        """One round; never anything to evaluate (what it deletes is over)."""
        try:
            await self._collect()
        except BackendUnavailable:
            raise
        except Exception:
            # Housekeeping: a failure here must not take the leader, and so scheduling, down.
            log.exception("gc.failed")
        return False

    async def _collect(self) -> None:
        s = self.settings
        jobs = await self.store.collect_jobs(s.job_gc_threshold_s, BATCH)
        evals = await self.store.collect_evaluations(s.eval_gc_threshold_s, BATCH)
        nodes = await self.store.collect_nodes(s.node_gc_threshold_s, BATCH)
        if jobs or evals or nodes:
            log.info(
                "gc.collected jobs=%d evaluations=%d nodes=%s",
                len(jobs),
                len(evals),
                [name for _, name in nodes],
            )
