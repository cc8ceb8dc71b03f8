"""The hypervisor drivers this node offers: the configured ones that can really work here."""

from __future__ import annotations

import logging
import shutil
from typing import Any

from mxvm.config import AgentSettings
from mxvm.errors import MxvmError
from mxvm.hypervisors.base import Driver
from mxvm.hypervisors.registry import get_driver

log = logging.getLogger(__name__)


def _config(name: str, s: AgentSettings) -> dict[str, Any]:
    if name == "qemu":
        return {"qemu_binary": s.qemu_binary}
    if name == "cloud-hypervisor":
        return {"binary": s.cloud_hypervisor_binary}
    if name == "libvirt":
        return {"uri": s.libvirt_uri}
    return {}


def _missing(name: str, s: AgentSettings) -> str | None:
    binary = {"qemu": s.qemu_binary, "cloud-hypervisor": s.cloud_hypervisor_binary}.get(name)
    if binary is not None and shutil.which(binary) is None:
        return f"{binary} not found on PATH"
    return None


def usable_drivers(settings: AgentSettings) -> dict[str, Driver]:
    out: dict[str, Driver] = {}
    for name in settings.drivers:
        why = _missing(name, settings)
        if why is None:
            try:
                out[name] = get_driver(name, **_config(name, settings))
            except (MxvmError, ImportError, TypeError) as exc:
                why = str(exc)
        if why is not None:
            log.warning("agent.driver_unusable %s: %s", name, why)
    return out
