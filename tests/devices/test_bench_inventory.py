"""bench/gpu_inventory.py runs against any sysfs root and ends with `gpus: N`."""

from __future__ import annotations

import json

import pytest

from bench.gpu_inventory import main
from tests.devices.fake_sysfs import MakeKernel, gpu, gpu_audio


def test_bench_prints_json_table_and_gpu_count(
    make_kernel: MakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = make_kernel([gpu("0000:65:00.0", 12), gpu_audio("0000:65:00.1", 12)])
    main(["--sysfs-root", str(kernel.root)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[-1] == "gpus: 1"
    report = json.loads(out[: out.index("\nIOMMU: ")])
    assert [d["address"] for d in report["devices"]] == ["0000:65:00.0", "0000:65:00.1"]
    assert "passthrough_ready_gpus: 1" in lines
