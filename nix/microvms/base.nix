# Base profile for mxvm guests (microvm.nix): small, quick to boot, and with no identity
# baked in. The host agent supplies the tap, MAC, address and GPUs per allocation at run
# time, so one built image serves every allocation.
{ lib, ... }:

let
  inherit (lib) mkDefault;
in
{
  system.stateVersion = "25.05";

  microvm = {
    hypervisor = mkDefault "qemu";
    vcpu = mkDefault 1;
    mem = mkDefault 512;
    # No NIC and no shares at build time: the host agent adds a virtio-net device on the
    # allocation's tap, and the read-only /nix/store comes from the erofs store disk.
    interfaces = mkDefault [ ];
    shares = mkDefault [ ];
  };

  networking = {
    hostName = mkDefault "mxvm-guest";
    # The guest agent configures the NIC from the kernel command line
    # (mxvm.ip=… mxvm.gw=… mxvm.mac=… mxvm.dns=…); nothing else may race it.
    useDHCP = false;
    dhcpcd.enable = false;
    # Guests are isolated from each other on the host's bridge, not inside.
    firewall.enable = false;
  };

  boot.initrd.availableKernelModules = [ "virtio_console" ];
  boot.kernelModules = [
    "virtio_console" # the guest agent's virtio-serial channel
    "button" # ACPI power button: QMP system_powerdown is a graceful stop
  ];

  # A guest runs one job and is thrown away: no Nix daemon, no documentation. (No login
  # either: root has no password; the host reaches the guest through the guest agent.)
  nix.enable = false;
  documentation.enable = false;
}
