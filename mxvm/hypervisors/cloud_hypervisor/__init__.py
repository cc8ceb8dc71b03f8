"""The cloud-hypervisor backend: pure argv/VmConfig builders, REST API client, driver."""

from mxvm.hypervisors.cloud_hypervisor.driver import CloudHypervisorDriver

__all__ = ["CloudHypervisorDriver"]
