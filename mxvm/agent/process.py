"""Run one host agent process: drivers, networking, and the Agent's loops."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from mxvm.agent.agent import Agent
from mxvm.agent.drivers import usable_drivers
from mxvm.agent.identity import hold_state_dir
from mxvm.config import AgentSettings
from mxvm.errors import InvalidSpec
from mxvm.image import default_image_dir
from mxvm.net import NodeNetwork

log = logging.getLogger(__name__)


def image_dir_of(settings: AgentSettings) -> Path:
    """Where image sub-directories live; the dev image builds into <this>/default."""
    return settings.images_dir or default_image_dir().parent


def network_for(settings: AgentSettings) -> NodeNetwork | None:
    """Bridge + taps need CAP_NET_ADMIN; without it VMs run without a NIC (said loudly)."""
    if os.geteuid() != 0:
        log.warning("agent.no_network not root: VMs get no network interface")
        return None
    return NodeNetwork(settings.bridge)


async def run_agent(
    settings: AgentSettings, stop: asyncio.Event, *, ready: asyncio.Event | None = None
) -> None:
    # Held from the start: a second agent on this state dir fails at once, not after the
    # drivers' KVM probe.
    with hold_state_dir(settings.state_dir):
        drivers = usable_drivers(settings)
        if not drivers:
            raise InvalidSpec(f"none of the configured drivers {settings.drivers} can run here")
        net = network_for(settings)
        agent = Agent(
            settings, drivers, image_dir=image_dir_of(settings), network=net, state_dir_held=True
        )
        try:
            await agent.run(stop, ready=ready)
        finally:
            if net is not None:
                await net.close()
