"""Host port assignment: static ports as requested, dynamic ones lowest-free in the range."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mxvm.models.job import PortRequest


def assign(
    requests: Sequence[PortRequest],
    in_use: Callable[[int], bool],
    port_range: tuple[int, int],
) -> dict[str, int] | None:
    """label -> host port for every request, or None when the node cannot provide them."""
    chosen: dict[str, int] = {}
    for req in requests:
        if req.static is not None:
            if in_use(req.static):
                return None
            chosen[req.label] = req.static
    taken = set(chosen.values())
    port, hi = port_range
    for req in requests:
        if req.static is not None:
            continue
        while port < hi and (port in taken or in_use(port)):
            port += 1
        if port >= hi:
            return None
        chosen[req.label] = port
        taken.add(port)
    return {req.label: chosen[req.label] for req in requests}
