# Evaluates mxvm's NixOS modules with nixpkgs' lib.evalModules against the stub options in
# stubs.nix and the fake pkgs in fake-pkgs.nix, once per scenario, and returns (as JSON with
# --strict --json) what tests/nix/test_nix_modules.py asserts on.
#
#   nix-instantiate --eval --strict --json tests/nix/eval.nix \
#     --argstr libPath /path/to/nixpkgs/lib --argstr scenariosJson '{"name": {...config...}}'
#
# A scenario is a NixOS configuration as JSON, evaluated with nix/modules/default.nix; with
# "_flake": true, with the flake's nixosModules.default + .coordinator instead (package
# defaulting, de-duplication); with "_guest": true, with nix/microvms/agent-guest.nix; with
# "_vmtestNode": NAME, with that node of nix/tests/vm-test.nix (plus its testScript).
{ libPath, scenariosJson }:

let
  lib = import libPath;
  pkgs = import ./fake-pkgs.nix { inherit lib; };
  # flake.nix's outputs over a stand-in nixpkgs: lib, the fake pkgs for every system, and a
  # nixosSystem that evaluates against the stub options.
  nixpkgs = {
    lib = lib // {
      nixosSystem =
        { modules, ... }:
        lib.evalModules {
          modules = modules ++ [
            ./stubs.nix
            { _module.args.pkgs = pkgs; }
          ];
        };
    };
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (_: pkgs);
  };
  flake = (import ../../flake.nix).outputs {
    self = flake;
    inherit nixpkgs;
    microvm.nixosModules.microvm = { };
  };
  vmTest = import ../../nix/tests/vm-test.nix { self = flake; };

  # lib.fileset (the guest's PYTHONPATH source) needs builtins.readFileType, Nix >= 2.14;
  # with Debian's Nix 2.8 that one value is reported, not forced.
  unevaluatedSource =
    name: value:
    if name == "PYTHONPATH" && !(builtins ? readFileType) then
      "unevaluated: lib.fileset needs Nix >= 2.14"
    else
      value;

  modulesFor =
    scenario:
    if scenario._flake or false then
      [
        flake.nixosModules.default
        flake.nixosModules.coordinator
      ]
    else if scenario._guest or false then
      [ ../../nix/microvms/agent-guest.nix ]
    else if scenario ? _vmtestNode then
      [ vmTest.nodes.${scenario._vmtestNode} ]
    else
      [ ../../nix/modules ];

  # The agent guest's outputs: its image (manifest, build script) and its runner's QEMU args.
  guestOutputs =
    config:
    let
      image = config.system.build.mxvmImage;
    in
    {
      imageScript = image.script;
      inherit (image.passthru) manifest;
      qemuExtraArgs = config.microvm.qemu.extraArgs;
      runnerKernelParams = config.microvm.kernelParams;
    };

  evalScenario =
    scenario:
    let
      inherit
        (lib.evalModules {
          modules = [
            ./stubs.nix
            { _module.args.pkgs = pkgs; }
            (removeAttrs scenario [
              "_flake"
              "_guest"
              "_vmtestNode"
            ])
          ]
          ++ modulesFor scenario;
        })
        config
        ;
      unit = u: {
        inherit (u)
          after
          requires
          wants
          wantedBy
          serviceConfig
          unitConfig
          ;
        environment = lib.mapAttrs unevaluatedSource u.environment;
        path = map (p: p.name) u.path;
      };
    in
    {
      failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
      inherit (config) warnings;
      services = lib.mapAttrs (_: unit) config.systemd.services;
      firewall = config.networking.firewall.allowedTCPPorts;
      postgresql = config.services.postgresql;
      redis = config.services.redis.servers;
      boot = {
        inherit (config.boot) kernelParams kernelModules;
        initrdKernelModules = config.boot.initrd.kernelModules;
        sysctl = config.boot.kernel.sysctl;
      };
      users = lib.attrNames config.users.users;
      tmpfiles = config.systemd.tmpfiles.rules;
      etc = lib.attrNames config.environment.etc;
    }
    // lib.optionalAttrs (scenario._guest or false) { guest = guestOutputs config; }
    // lib.optionalAttrs (scenario ? _vmtestNode) { inherit (vmTest) name testScript; };
in
lib.mapAttrs (_: evalScenario) (builtins.fromJSON scenariosJson)
