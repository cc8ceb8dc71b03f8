# The agent guest: the base profile plus mxvm's guest agent (`python3 -m mxvm.guest`),
# started at boot on the virtio-serial port org.mxvm.guest.0.
#
#   microvm.declaredRunner   runs it standalone, with microvm.nix's store disk
#                            (`just vm-run-agent`)
#   system.build.mxvmImage   the same guest as an mxvm image directory: vmlinuz, initrd.img
#                            (with the store inside) and manifest.json, for the host
#                            agent's services.mxvm.agent.images
{
  lib,
  pkgs,
  extendModules,
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
      (lib.fileset.fileFilter (file: file.hasExt "py") ../../mxvm/guest)
    ];
  };

  portName = "org.mxvm.guest.0";
  kernelFile = pkgs.stdenv.hostPlatform.linux-kernel.target;

  # The image variant: the store rides in the initrd (initrd-store.nix).
  image = (extendModules { modules = [ ./initrd-store.nix ]; }).config;

  # What mxvm.agent.images reads: paths relative to the image directory, the kernel command
  # line words the guest needs (init=…), and the memory it needs to boot. Per-allocation
  # words (mxvm.ip=… mxvm.gw=… mxvm.mac=…) are the host agent's to add.
  manifest = {
    format = "mxvm-nix-image/1";
    kernel = "vmlinuz";
    initrd = "initrd.img";
    cmdline = toString image.microvm.kernelParams;
    # The store image is unpacked into RAM from the initrd before it is mounted.
    min_memory_mb = 1024;
    cmdline_hints.network = "mxvm.ip=A.B.C.D/N mxvm.gw=A.B.C.D mxvm.mac=MAC mxvm.dns=IP[,IP]";
    channel = {
      kind = "virtio-serial";
      port_name = portName;
    };
    machine_hints = "-M microvm,acpi=on (power button for system_powerdown)";
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

  system.build.mxvmImage = pkgs.runCommand "mxvm-agent-guest-image" { passthru = { inherit manifest; }; } ''
    mkdir -p $out
    ln -s ${image.microvm.kernel}/${kernelFile} $out/vmlinuz
    ln -s ${image.system.build.initrdWithStore} $out/initrd.img
    cp ${pkgs.writeText "manifest.json" (builtins.toJSON manifest)} $out/manifest.json
  '';
}
