"""Running a snippet in a fresh interpreter: what a new process imports is only seen there."""

from __future__ import annotations

import subprocess
import sys


def fresh_python(code: str) -> str:
    """The snippet's stdout, stripped; its failure fails the test."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()
