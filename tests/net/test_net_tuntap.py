"""The /dev/net/tun layer on its own: create exclusively, destroy unless held."""

from __future__ import annotations

import subprocess

import pytest

from mxvm.net import tuntap

from .netns_tools import HOLD_TAP_SCRIPT, link_json, link_names

pytestmark = pytest.mark.privileged


def test_create_is_exclusive_and_persistent(netns: str) -> None:
    assert tuntap.create_persistent_tap("tt0", namespace=netns) is True
    assert tuntap.create_persistent_tap("tt0", namespace=netns) is False
    link = link_json(netns, "tt0")
    assert link is not None
    assert link["linkinfo"]["info_data"]["persist"] is True
    assert link["linkinfo"]["info_data"]["type"] == "tap"


def test_destroy_removes_an_idle_tap(netns: str) -> None:
    tuntap.create_persistent_tap("tt0", namespace=netns)
    tuntap.create_persistent_tap("tt1", namespace=netns, multi_queue=True)
    assert tuntap.destroy_tap("tt0", namespace=netns) is True
    assert tuntap.destroy_tap("tt1", namespace=netns, multi_queue=True) is True
    assert not {"tt0", "tt1"} & link_names(netns)


def test_destroy_declines_a_tap_someone_holds(netns: str) -> None:
    tuntap.create_persistent_tap("tt0", namespace=netns)
    holder = subprocess.Popen(
        ["ip", "netns", "exec", netns, "python3", "-c", HOLD_TAP_SCRIPT, "tt0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "attached"
        assert tuntap.destroy_tap("tt0", namespace=netns) is False
        assert "tt0" in link_names(netns)
    finally:
        holder.communicate("", timeout=10)
    assert "tt0" in link_names(netns), "still persistent after the holder let go"
