"""The agent guest (nix/microvms/agent-guest.nix), evaluated against stub microvm.nix
options: its guest agent unit, its runner's channel, and its image manifest, each checked
against the Python side that must agree with it."""

from __future__ import annotations

import json
from pathlib import Path

from mxvm.agent.images import resolve_image
from mxvm.guest.__main__ import parse_args
from mxvm.guest.protocol import PORT_NAME
from mxvm.image.qemu import channel_args
from tests.nix.conftest import Evaluated
from tests.nix.scenarios import GUEST


def test_guest_agent_starts_at_boot_and_powers_off_when_done(ev: dict[str, Evaluated]) -> None:
    e = ev["guest"]
    assert e.failed_assertions == []
    unit = e.unit(GUEST)
    assert unit["wantedBy"] == ["multi-user.target"]
    python, *argv = unit["serviceConfig"]["ExecStart"].split()
    assert python.endswith("-python3/bin/python3")
    assert argv[:2] == ["-m", "mxvm.guest"]
    assert parse_args(argv[2:]) == {"port_name": PORT_NAME, "no_net": False}
    assert unit["unitConfig"] == {
        "SuccessAction": "poweroff-force",
        "FailureAction": "poweroff-force",
    }
    # netconf runs `ip` (iproute2) and `hostname` (nettools).
    assert {"iproute2", "nettools"} <= set(unit["path"])
    assert "virtio_console" in e.raw["boot"]["kernelModules"]


def test_runner_serves_the_channel_the_host_client_expects(ev: dict[str, Evaluated]) -> None:
    """`just vm-run-agent` connects mxvm.guest.client to ./mxvm-guest.sock of the runner."""
    guest = ev["guest"].raw["guest"]
    assert guest["qemuExtraArgs"] == channel_args(Path("mxvm-guest.sock"))


def test_image_manifest_is_what_the_host_agent_reads(
    ev: dict[str, Evaluated], tmp_path: Path
) -> None:
    guest = ev["guest"].raw["guest"]
    image_dir = tmp_path / "images" / "agent-guest"
    image_dir.mkdir(parents=True)
    (image_dir / "manifest.json").write_text(json.dumps(guest["manifest"]))
    image = resolve_image(tmp_path / "images", "agent-guest")
    assert (image.kernel, image.initrd) == (image_dir / "vmlinuz", image_dir / "initrd.img")
    assert image.root_disk is None, "the store travels in the initrd"
    assert image.min_memory_mb == 1024
    assert image.cmdline[0].startswith("init=/nix/store/")
    # The image's command line comes from the initrd-store variant, not from the runner.
    assert "stub.store=/nix-store.erofs" in image.cmdline
    assert "stub.store=store-disk" in guest["runnerKernelParams"]
    assert guest["manifest"]["channel"]["port_name"] == PORT_NAME
    script = guest["imageScript"]
    assert "-linux/bzImage $out/vmlinuz" in script
    assert "-mxvm-initrd-with-store $out/initrd.img" in script
    assert "$out/manifest.json" in script
