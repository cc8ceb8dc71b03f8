"""`python -m mxvm.image build [--dest DIR] [--force]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mxvm.image.build import build_dev_image, default_image_dir
from mxvm.image.errors import ImageBuildError


def _progress(message: str) -> None:
    print(f"mxvm image: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mxvm.image")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or reuse) the dev guest image")
    build.add_argument("--dest", type=Path, default=None, help="default: %(default)s")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    dest = args.dest or default_image_dir()
    try:
        paths = build_dev_image(dest, progress=_progress, force=args.force)
    except ImageBuildError as exc:
        print(f"mxvm image: error: {exc.detail}", file=sys.stderr)
        return 1
    out = {"kernel": str(paths.kernel), "initrd": str(paths.initrd)}
    print(json.dumps({**out, "manifest": str(paths.manifest)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
