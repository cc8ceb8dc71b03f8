"""Device matching and assignment of concrete device ids to an allocation.

A request is met by healthy devices not in use (by live allocations or by this plan) whose
kind matches, vendor matches case-insensitively, model matches the request's regular
expression (re.search), memory is at least min_memory_mb and, when the request lists ids,
whose id is listed. Where one NUMA node can hold the whole request, the devices come from a
single NUMA node (the smallest group that fits, keeping bigger groups whole for bigger requests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mxvm.models.job import DeviceRequest
from mxvm.models.node import Device
from mxvm.scheduler.constraints import compiled


def matches(request: DeviceRequest, device: Device) -> bool:
    if device.kind != request.kind or device.memory_mb < request.min_memory_mb:
        return False
    if request.vendor is not None and device.vendor.lower() != request.vendor.lower():
        return False
    if request.model is not None and compiled(request.model).search(device.model) is None:
        return False
    return not request.ids or device.id in request.ids


def _pick(free: list[Device], count: int) -> list[str]:
    """`count` ids from `free` (sorted by id), from one NUMA node where possible."""
    groups: dict[int, list[Device]] = {}
    for dev in free:
        groups.setdefault(-1 if dev.numa_node is None else dev.numa_node, []).append(dev)
    fitting = [k for k, g in groups.items() if len(g) >= count]
    if fitting:
        best = min(fitting, key=lambda k: (len(groups[k]), k))
        return [d.id for d in groups[best][:count]]
    # No single NUMA node suffices: take the biggest groups first to span as few as possible.
    ordered = sorted(groups, key=lambda k: (-len(groups[k]), k))
    return [d.id for k in ordered for d in groups[k]][:count]


def assign(
    requests: Sequence[DeviceRequest],
    devices: Sequence[Device],
    in_use: Callable[[str], bool],
) -> tuple[list[str], str | None]:
    """The device ids meeting every request, or ([], kind of the first request that fails)."""
    taken: list[str] = []
    for request in requests:
        free = sorted(
            (
                d
                for d in devices
                if d.healthy and d.id not in taken and not in_use(d.id) and matches(request, d)
            ),
            key=lambda d: d.id,
        )
        if len(free) < request.count:
            return [], request.kind
        taken.extend(_pick(free, request.count))
    return taken, None
