"""Node scores for a placement; higher is better.

binpack prefers the node that will be most utilized after the placement (mean of the cpu and
memory fractions in use), so nodes fill up before fresh ones are opened; spread prefers the
least utilized node.
"""

from __future__ import annotations

from collections.abc import Callable

from mxvm.models.resources import Resources
from mxvm.scheduler.state import NodeState

Scorer = Callable[[NodeState], float]


def _fraction(used: int, cap: int) -> float:
    return used / cap if cap > 0 else 1.0


def binpack(need: Resources) -> Scorer:
    cpu, memory = need.cpu_millicores, need.memory_mb

    def score(state: NodeState) -> float:
        return (
            _fraction(state.used_cpu + cpu, state.cap_cpu)
            + _fraction(state.used_memory + memory, state.cap_memory)
        ) / 2

    return score


def spread(need: Resources) -> Scorer:
    packed = binpack(need)

    def score(state: NodeState) -> float:
        return 1.0 - packed(state)

    return score


SCORERS: dict[str, Callable[[Resources], Scorer]] = {"binpack": binpack, "spread": spread}


def scorer(algorithm: str, need: Resources) -> Scorer:
    try:
        make = SCORERS[algorithm]
    except KeyError:
        raise ValueError(f"unknown scheduling algorithm {algorithm!r}") from None
    return make(need)
