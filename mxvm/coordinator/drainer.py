"""The leader's drainer: steps each draining node's drain along (mxvm.store.drain).

A drain is not done in one go: a service job's next allocations leave the node only once the
replacements of the last ones run, and the deadline comes later. So the drainer looks at every
draining node each `drain_interval_s`, and sooner when woken (a drain started, an allocation
report arrived while a drain is on in this process).
"""

from __future__ import annotations

import logging

from mxvm.coordinator.watch import NodeWatch
from mxvm.store import Store

log = logging.getLogger(__name__)


class Drainer:
    def __init__(self, store: Store, watch: NodeWatch) -> None:
        self.store = store
        self.watch = watch

    async def run_once(self) -> bool:
        """One step of every drain; whether evaluations were queued (wake the evaluator)."""
        nodes = await self.store.draining_node_ids()
        self.watch.draining = bool(nodes)
        queued = False
        for node_id in nodes:
            step = await self.store.drain_step(node_id)
            if step is None:
                continue
            if step.stopped:
                log.info(
                    "node.drain_step %s stopped=%d",
                    node_id,
                    len(step.stopped),
                    extra={"node_id": node_id, "stopped": [a for a, _ in step.stopped]},
                )
                queued = queued or bool(step.evaluations)
            if step.completed:
                log.info("node.drain_complete %s", node_id, extra={"node_id": node_id})
        return queued
