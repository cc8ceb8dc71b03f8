"""Every Redis key mxvm uses, in one place. All start with PREFIX."""

from __future__ import annotations

PREFIX = "mxvm:"

LEADER = f"{PREFIX}leader"
"""Value: the leader's token (`<holder>#<random>`); expires unless renewed."""

LEADER_EPOCH = f"{PREFIX}leader:epoch"
"""Value: an integer, INCRemented by each won election (never expires)."""


def node_heartbeat(node_id: str) -> str:
    """Value: the Unix time of the node's last heartbeat; expires after the heartbeat TTL."""
    return f"{PREFIX}node:{node_id}:heartbeat"


def alloc_lease(alloc_id: str) -> str:
    """Value: the holder (an agent) running the allocation; expires unless renewed."""
    return f"{PREFIX}alloc:{alloc_id}:lease"
