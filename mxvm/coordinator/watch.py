"""Wake-ups inside one coordinator process, fed by Postgres NOTIFY (mxvm.store.listen).

`mxvm_node` carries the ids of nodes whose allocations changed: agents long-polling on that node are
answered at once. `mxvm_eval` means new evaluations: the evaluator wakes. Both consumers also
poll, so a lost notification only costs latency.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mxvm.models import NodeAllocations, NodeChanges
from mxvm.store import Store

Answer = TypeVar("Answer", NodeAllocations, NodeChanges)

# How often a waiting long-poll re-reads the node's index even without a notification.
POLL_FALLBACK_S = 5.0


class NodeWatch:
    def __init__(self) -> None:
        self._node_events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.eval_wakeup = asyncio.Event()
        self.drain_wakeup = asyncio.Event()
        # Whether the drainer (in this process, when it leads) last found a drain under way:
        # only then is an allocation report worth waking it for.
        self.draining = False

    def wake_evaluator(self, _payload: str = "") -> None:
        self.eval_wakeup.set()

    def wake_drainer(self) -> None:
        self.drain_wakeup.set()

    def node_changed(self, payload: str) -> None:
        """`payload`: one node id, or several separated by commas."""
        for node_id in payload.split(","):
            for ev in self._node_events.get(node_id, ()):
                ev.set()

    def wake_all(self) -> None:
        """After a reconnect: anything may have changed."""
        for events in self._node_events.values():
            for ev in events:
                ev.set()
        self.eval_wakeup.set()

    async def wait_for_node(
        self,
        store: Store,
        node_id: str,
        index: int,
        wait_s: float,
        read: Callable[[], Awaitable[Answer]],
    ) -> Answer:
        """`read()` once the node's index is past `index` (or at `wait_s`): the node's
        allocations, or what changed in them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        ev = asyncio.Event()
        self._node_events[node_id].add(ev)
        try:
            notified = False
            while True:
                ev.clear()
                if notified:  # most likely a change: read the answer straight away
                    answer = await read()
                    if answer.index > index:
                        return answer
                elif await store.node_alloc_index(node_id) > index:
                    return await read()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return await read()
                try:
                    await asyncio.wait_for(ev.wait(), min(remaining, POLL_FALLBACK_S))
                    notified = True
                except TimeoutError:
                    notified = False
        finally:
            self._node_events[node_id].discard(ev)
            if not self._node_events[node_id]:
                del self._node_events[node_id]
