"""Power-of-k candidate selection over a shuffled ring of nodes (Nomad's LimitIterator).

Nodes are visited in a pseudo-random order derived from the evaluation's PRNG: position
i of the walk is node (offset + i * stride) mod n, with stride coprime to n, so every node is
visited exactly once per pass and nothing proportional to n is built per evaluation. Up to
`limit` feasible nodes form the candidate pool; a placement goes to the best-scoring one.

The pool lives for the whole evaluation: after a placement only the chosen node is re-probed.
With binpack it stays a candidate (and usually wins again, so a node fills before a fresh one
is opened); with spread it is parked and the next feasible node of the walk takes its place,
so the placements of one job go to different nodes. Usage only grows within an evaluation, so
a node rejected once stays rejected: when the walk is done and the pool is empty, every node
has been rejected exactly once and the counted reasons explain the failure.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Callable

# A probe says why a node is rejected, or gives its score (higher is better).
Probe = Callable[[int], tuple[str | None, float]]


def walk_params(n: int, rng: random.Random) -> tuple[int, int]:
    """(offset, stride) of a pseudo-random walk visiting each of n positions once."""
    if n <= 1:
        return 0, 1
    offset = rng.randrange(n)
    stride = rng.randrange(1, n)
    while math.gcd(stride, n) != 1:
        stride = stride % (n - 1) + 1
    return offset, stride


class CandidatePool:
    __slots__ = (
        "_cursor",
        "_limit",
        "_n",
        "_offset",
        "_parked",
        "_pool",
        "_probe",
        "_rejected",
        "_rotate",
        "_stride",
    )

    def __init__(
        self, n: int, limit: int, rng: random.Random, probe: Probe, *, rotate: bool
    ) -> None:
        self._n, self._limit, self._probe, self._rotate = n, limit, probe, rotate
        self._offset, self._stride = walk_params(n, rng)
        self._cursor = 0
        self._pool: dict[int, float] = {}
        self._rejected: dict[int, str] = {}
        self._parked: deque[int] = deque()

    def _next(self) -> int | None:
        if self._cursor < self._n:
            pos = (self._offset + self._cursor * self._stride) % self._n
            self._cursor += 1
            return pos
        if self._parked:
            return self._parked.popleft()
        return None

    def _fill(self) -> None:
        pool, rejected, probe = self._pool, self._rejected, self._probe
        while len(pool) < self._limit:
            pos = self._next()
            if pos is None:
                return
            reason, score = probe(pos)
            if reason is None:
                pool[pos] = score
            else:
                rejected[pos] = reason

    def select(self) -> int | None:
        """The best candidate's node position, or None when no node is feasible."""
        self._fill()
        pool = self._pool
        if not pool:
            return None
        return max(pool, key=pool.__getitem__)  # ties: the earliest in the walk

    def placed(self, pos: int) -> None:
        """The plan put something on `pos`: re-probe it."""
        reason, score = self._probe(pos)
        if reason is not None:
            del self._pool[pos]
            self._rejected[pos] = reason
        elif self._rotate:
            del self._pool[pos]
            self._parked.append(pos)
        else:
            self._pool[pos] = score

    def failures(self) -> dict[str, int]:
        """Reasons per rejected node (all n of them once select() has returned None)."""
        return dict(Counter(self._rejected.values()))
