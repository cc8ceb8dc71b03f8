# The agent guest: the base profile plus mxvm's guest agent (`python3 -m mxvm.guest`),
# started at boot on the virtio-serial port org.mxvm.guest.0. `system.build.mxvmImage` is
# the same guest as an image directory the host agent accepts (kernel, initrd, store disk,
# manifest.json); `microvm.declaredRunner` runs it standalone for development.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  # The guest agent uses only the standard library: ship just the modules it imports,
  # so the guest's closure has python3 and not mxvm's server dependencies.
  guestSrc = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [
      ../../mxvm/__init__.py
      ../../mxvm/errors.py
      ../../mxvm/guest
    ];
  };

  portName = "org.mxvm.guest.0";
  kernelFile = pkgs.stdenv.hostPlatform.linux-kernel.target;

  manifest = {
    format = "mxvm-nix-image/1";
    kernel = "vmlinuz";
    initrd = "initrd.img";
    # Attached read-only as a virtio-blk disk; the guest mounts it by its label nix-store.
    disks = [
      {
        path = "store.img";
        read_only = true;
        label = "nix-store";
      }
    ];
    cmdline = toString config.microvm.kernelParams;
    cmdline_hints.network = "mxvm.ip=A.B.C.D/N mxvm.gw=A.B.C.D mxvm.mac=MAC mxvm.dns=IP[,IP]";
    channel = {
      kind = "virtio-serial";
      port_name = portName;
    };
    machine_hints = "-M microvm,acpi=on (power button for system_powerdown)";
    min_memory_mb = 256;
    recommended_memory_mb = config.microvm.mem;
  };
in
{
  imports = [ ./base.nix ];

  networking.hostName = "mxvm-agent-guest";

  systemd.services.mxvm-guest = {
    description = "mxvm guest agent";
    wantedBy = [ "multi-user.target" ];
    # netconf runs `ip` and `hostname`; jobs get a usual userland.
    path = [
      pkgs.iproute2
      pkgs.nettools
      pkgs.coreutils
      pkgs.bash
    ];
    environment = {
      PYTHONPATH = "${guestSrc}";
      PYTHONDONTWRITEBYTECODE = "1";
    };
    # The VM exists to run its job: when the agent ends (a shutdown request, or a crash)
    # the guest powers off, which the host sees as the hypervisor exiting.
    unitConfig = {
      SuccessAction = "poweroff-force";
      FailureAction = "poweroff-force";
    };
    serviceConfig = {
      ExecStart = "${pkgs.python3}/bin/python3 -m mxvm.guest --port-name ${portName}";
      # Jobs run as root inside the VM: the VM is the isolation boundary.
      WorkingDirectory = "/root";
      Restart = "no";
    };
  };

  # `just vm-run-agent`: the standalone runner exposes the same channel as a socket in its
  # working directory (QEMU is the server), so the host-side client can connect to it.
  microvm.qemu.extraArgs = [
    "-device"
    "virtio-serial-device"
    "-chardev"
    "socket,id=mxvmch,path=mxvm-guest.sock,server=on,wait=off"
    "-device"
    "virtserialport,chardev=mxvmch,name=${portName}"
  ];

  system.build.mxvmImage = pkgs.runCommand "mxvm-agent-guest-image" { } ''
    mkdir -p $out
    ln -s ${config.microvm.kernel}/${kernelFile} $out/vmlinuz
    ln -s ${config.microvm.initrdPath} $out/initrd.img
    ln -s ${config.microvm.storeDisk} $out/store.img
    cp ${pkgs.writeText "manifest.json" (builtins.toJSON manifest)} $out/manifest.json
  '';
}
