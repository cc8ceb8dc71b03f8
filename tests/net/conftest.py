"""Fixtures for mxvm.net: throwaway network namespaces, never the host's interfaces.

Every privileged test works inside `mxvmtest-<random>` namespaces that are deleted
afterwards, pass or fail. Inspection goes through `ip -j` so the tests do not trust the
code under test to report its own state.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from mxvm.net import NodeNetwork
from mxvm.net.rtnl import Rtnl

from .netns_tools import NETNS_PREFIX, require_netns, run


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], str]]:
    """Factory: make_netns('vm1') -> a fresh namespace name; all deleted at teardown."""
    require_netns()
    made: list[str] = []
    tag = secrets.token_hex(4)

    def make(role: str) -> str:
        name = f"{NETNS_PREFIX}{tag}-{role}"
        run(["ip", "netns", "add", name])
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in reversed(made):
            run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns(make_netns: Callable[[str], str]) -> str:
    return make_netns("node")


@pytest.fixture
async def net(netns: str) -> AsyncIterator[NodeNetwork]:
    network = NodeNetwork("mxvmtest0", netns=netns)
    try:
        yield network
    finally:
        await network.close()


@pytest.fixture
async def rtnl(netns: str) -> AsyncIterator[Rtnl]:
    r = Rtnl(netns)
    try:
        yield r
    finally:
        r.close()
