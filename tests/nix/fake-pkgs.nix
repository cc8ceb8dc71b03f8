# The few packages the modules reference, as fake derivations (never built), and
# `formats.toml` whose `generate` puts the value it was given into the returned path after a
# `#`, so the tests can read the settings file the module would have written.
{ lib }:

let
  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };

  tomlValue =
    types.nullOr (
      types.oneOf [
        types.bool
        types.int
        types.float
        types.str
        types.path
        (types.attrsOf tomlValue)
        (types.listOf tomlValue)
      ]
    )
    // {
      description = "TOML value";
    };
  inherit (lib) types;
in
{
  mxvm = fakeDrv "mxvm";
  qemu_kvm = fakeDrv "qemu-system-x86_64";
  cloud-hypervisor = fakeDrv "cloud-hypervisor";
  nftables = fakeDrv "nft";

  # The guest's packages, and the microvm.nix outputs the stubs stand in for.
  python3 = fakeDrv "python3";
  iproute2 = fakeDrv "iproute2";
  nettools = fakeDrv "nettools";
  coreutils = fakeDrv "coreutils";
  bash = fakeDrv "bash";
  cpio = fakeDrv "cpio";
  linux = fakeDrv "linux";
  initrd = fakeDrv "initrd";
  storeDisk = fakeDrv "store-disk.erofs";
  stdenv.hostPlatform = {
    system = "x86_64-linux";
    linux-kernel.target = "bzImage";
  };

  # Derivations whose build script a test may read.
  runCommand = name: env: script: fakeDrv name // { inherit script; passthru = env.passthru or { }; };
  writeText = name: text: fakeDrv name // { inherit text; };

  # What the flake's modules call to build the default package.
  callPackage = path: _args: fakeDrv "mxvm-from-${baseNameOf path}";

  formats.toml = _: {
    type = types.attrsOf tomlValue;
    generate = name: value: "/nix/store/00000000000000000000000000000000-${name}#${builtins.toJSON value}";
  };
}
