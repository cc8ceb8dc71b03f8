"""The scheduler's view of the cluster: plain data, built by the coordinator from the store."""

from __future__ import annotations

from dataclasses import dataclass, field

from mxvm.models.allocation import Allocation
from mxvm.models.node import Node
from mxvm.models.resources import ZERO, Resources


@dataclass(slots=True)
class NodeUsage:
    """What live (non-terminal) allocations already take on one node."""

    used: Resources = ZERO
    device_ids: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    alloc_count: int = 0


@dataclass(slots=True)
class ClusterSnapshot:
    nodes: list[Node]
    usage: dict[str, NodeUsage] = field(default_factory=dict)

    def usage_of(self, node_id: str) -> NodeUsage:
        u = self.usage.get(node_id)
        if u is None:
            u = self.usage[node_id] = NodeUsage()
        return u

    def account(self, alloc: Allocation) -> None:
        """Count a committed placement in its node's usage (what apply_plan just wrote)."""
        u = self.usage_of(alloc.node_id)
        u.used = u.used + alloc.resources
        u.device_ids.update(alloc.device_ids)
        u.ports.update(alloc.ports.values())
        u.alloc_count += 1
