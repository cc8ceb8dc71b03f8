"""Host devices: PCI/IOMMU inventory from sysfs, NVML inventory, VFIO binding of groups."""
