"""Errors of the guest image builder."""

from __future__ import annotations

from mxvm.errors import MxvmError


class ImageBuildError(MxvmError):
    """The dev guest image could not be built (apt, a missing tool, an unresolved library)."""

    title = "guest image build failed"
