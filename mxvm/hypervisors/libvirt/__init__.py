"""The libvirt backend: pure domain XML builder, a typed async connection, and the driver."""

from mxvm.hypervisors.libvirt.driver import LibvirtDriver

__all__ = ["LibvirtDriver"]
