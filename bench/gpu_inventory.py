"""The real device inventory of the machine this runs on: sysfs under /sys and real NVML.

    .venv/bin/python -m bench.gpu_inventory [--sysfs-root /sys] [--state-dir DIR]

Prints the report as JSON, then the operator table, then timings. Meant for a machine with
a GPU; elsewhere it still runs and says why NVML is absent. Last line: `gpus: N` (display-
class PCI functions, NVIDIA or not, whether or not NVML sees them).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from mxvm.devices.inventory import scan_inventory
from mxvm.devices.nvml import PynvmlBackend


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sysfs-root", type=Path, default=Path("/sys"))
    parser.add_argument("--state-dir", type=Path, default=None, help="remember GPU names here")
    args = parser.parse_args(argv)

    nvml = PynvmlBackend()
    started = time.perf_counter()
    nvml_status = nvml.query()
    nvml_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    report = scan_inventory(args.sysfs_root, nvml=nvml, state_dir=args.state_dir)
    scan_ms = (time.perf_counter() - started) * 1000

    print(report.model_dump_json(indent=2))
    print(report.render_table())
    print(f"pci_functions: {len(report.devices)}")
    print(f"nvml: {nvml_status.summary}")
    print(f"nvml_query_ms: {nvml_ms:.1f}")
    print(f"inventory_scan_ms: {scan_ms:.1f}")
    print(f"passthrough_ready_gpus: {sum(1 for g in report.gpus if g.passthrough_ready)}")
    print(f"gpus: {len(report.gpus)}")


if __name__ == "__main__":
    main()
