# Makes a microvm.nix guest bootable from a kernel and an initrd alone, which is the form
# mxvm's host agent runs (manifest: kernel, initrd, cmdline): the guest's /nix/store, an
# erofs image, travels inside the initrd and is loop-mounted in stage 1, as NixOS's netboot
# images do with squashfs. It costs guest memory (the store sits in RAM), hence
# min_memory_mb in the manifest. agent-guest.nix applies it with extendModules, so the
# microvm.nix runner keeps its usual store disk.
{
  config,
  lib,
  pkgs,
  ...
}:

{
  fileSystems."/nix/store" = lib.mkForce {
    device = "/nix-store.erofs";
    fsType = "erofs";
    options = [
      "loop"
      "ro"
    ];
    neededForBoot = true;
    noCheck = true;
  };

  boot.initrd.kernelModules = [
    "loop"
    "erofs"
  ];

  # An initrd may be several cpio archives back to back, each compressed or not: append an
  # uncompressed one holding the store image (already compressed) to the NixOS initrd.
  system.build.initrdWithStore =
    pkgs.runCommand "mxvm-initrd-with-store" { nativeBuildInputs = [ pkgs.cpio ]; }
      ''
        mkdir root
        cp ${config.microvm.storeDisk} root/nix-store.erofs
        (cd root && echo nix-store.erofs | cpio --quiet -o -H newc --reproducible) > store.cpio
        cat ${config.microvm.initrdPath} store.cpio > $out
      '';
}
