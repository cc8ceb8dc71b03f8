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

  # What the flake's modules call to build the default package.
  callPackage = path: _args: fakeDrv "mxvm-from-${baseNameOf path}";

  formats.toml = _: {
    type = types.attrsOf tomlValue;
    generate = name: value: "/nix/store/00000000000000000000000000000000-${name}#${builtins.toJSON value}";
  };
}
