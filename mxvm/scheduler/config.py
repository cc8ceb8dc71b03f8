"""Scheduler settings and the automatic candidate limit.

The candidate limit is Nomad's LimitIterator idea ("power of k choices"): instead of scoring
every node for every placement, walk the nodes in an order shuffled per evaluation, keep up to
`limit` feasible ones as candidates and place on the best-scoring candidate. With the automatic
limit a cluster of up to 64 nodes is searched exhaustively; a larger one uses
max(16, 2 * ceil(log2(n))) candidates (28 for 10,000 nodes), which keeps the cost of a
placement nearly independent of the cluster size while still choosing well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EXHAUSTIVE_MAX_NODES = 64
MIN_CANDIDATES = 16
ALGORITHMS = frozenset({"binpack", "spread"})


@dataclass(frozen=True)
class SchedulerConfig:
    candidate_limit: int | None = None  # None = automatic, see candidate_limit()
    port_range: tuple[int, int] = (20000, 32000)  # dynamic host ports [lo, hi)
    algorithm_default: str = "binpack"  # for jobs that did not set `scheduling` themselves

    def __post_init__(self) -> None:
        lo, hi = self.port_range
        if not 1 <= lo < hi <= 65536:
            raise ValueError(f"port_range must satisfy 1 <= lo < hi <= 65536: {self.port_range}")
        if self.algorithm_default not in ALGORITHMS:
            raise ValueError(f"algorithm_default must be one of {sorted(ALGORITHMS)}")
        if self.candidate_limit is not None and self.candidate_limit < 1:
            raise ValueError("candidate_limit must be at least 1")


def candidate_limit(config: SchedulerConfig, n_nodes: int) -> int:
    """How many feasible nodes to compare for one placement (at least 1)."""
    if config.candidate_limit is not None:
        return config.candidate_limit
    if n_nodes <= EXHAUSTIVE_MAX_NODES:
        return max(1, n_nodes)
    return max(MIN_CANDIDATES, 2 * math.ceil(math.log2(n_nodes)))
