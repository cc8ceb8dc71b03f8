"""Node-loss reconciliation: ready nodes whose Redis heartbeat lease expired are marked down,
their live allocations lost, and their jobs re-evaluated so replacements get placed.

Redis is the judge of liveness, so the reaper refuses to judge right after Redis itself
(re)started: an empty Redis would otherwise make every node look dead at once. Nor does it
judge in the first heartbeat TTL of its leadership (as Nomad's new leader resets every
node's heartbeat timer): while there was no leader, or while this one could not reach Redis
(and lost its lease for it), heartbeats failed with 503 and leases ran out though the nodes
were fine; they get one TTL to get through again before anything is declared lost.
"""

from __future__ import annotations

import logging
import time

from mxvm.leases import Leases
from mxvm.models import EvalTrigger
from mxvm.store import Store
from mxvm.store.evaluations import NewEvaluation

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, store: Store, leases: Leases, heartbeat_ttl_s: float) -> None:
        self.store = store
        self.leases = leases
        self.ttl = heartbeat_ttl_s
        self.judges_from = time.monotonic() + heartbeat_ttl_s  # one Reaper per leadership

    async def run_once(self) -> list[str]:
        """Mark nodes whose heartbeat lease is gone as down; returns their ids."""
        if time.monotonic() < self.judges_from or await self.leases.uptime_s() < self.ttl:
            return []
        ready = await self.store.ready_node_ids()
        if not ready:
            return []
        live = await self.leases.live_nodes(ready)
        dead = [n for n in ready if n not in live]
        if not dead:
            return []
        return await declare_lost(self.store, dead)


async def declare_lost(store: Store, node_ids: list[str]) -> list[str]:
    """Mark these nodes down, their live allocations lost, and re-evaluate the jobs those
    belonged to; returns the nodes that were not down already."""
    down, jobs = await store.mark_nodes_down(node_ids)
    for node_id in down:
        log.warning("node.down %s", node_id, extra={"node_id": node_id})
    await store.create_evaluations(
        [NewEvaluation(job_id, EvalTrigger.NODE_UPDATE) for job_id in sorted(jobs)]
    )
    return down
