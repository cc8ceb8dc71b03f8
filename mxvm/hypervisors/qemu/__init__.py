"""The QEMU backend: pure argv builder, QMP client, KVM probe, and the driver."""

from mxvm.hypervisors.qemu.driver import QemuDriver

__all__ = ["QemuDriver"]
