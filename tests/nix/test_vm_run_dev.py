"""scripts/vm-run-dev, the no-Nix path of `just vm-run-agent`: boots the dev guest image
under QEMU, runs a command through the guest agent, passes its output and exit status on,
and powers the guest off."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from mxvm.image import build_dev_image, default_image_dir
from tests.nix.conftest import REPO

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]


def test_runs_a_command_in_the_dev_guest() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    build_dev_image(default_image_dir())  # cached; shared with tests/guest
    proc = subprocess.run(
        [
            sys.executable, str(REPO / "scripts" / "vm-run-dev"), "--tcg", "--",
            "sh", "-c", "uname -s; echo oops >&2; exit 3",
        ],
        capture_output=True, text=True, timeout=500, check=False,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "Linux\n"
    assert "oops" in proc.stderr
    assert "guest agent" in proc.stderr and "ready" in proc.stderr
    assert "guest powered off (hypervisor exit 0)" in proc.stderr
