# Evaluates mxvm's NixOS modules with nixpkgs' lib.evalModules against the stub options in
# stubs.nix and the fake pkgs in fake-pkgs.nix, once per scenario, and returns (as JSON with
# --strict --json) what tests/nix/test_nix_modules.py asserts on.
#
#   nix-instantiate --eval --strict --json tests/nix/eval.nix \
#     --argstr libPath /path/to/nixpkgs/lib --argstr scenariosJson '{"name": {...config...}}'
#
# A scenario is a NixOS configuration as JSON; a key "_flake": true evaluates the flake's
# nixosModules.default + .coordinator (package defaulting, de-duplication) instead of
# nix/modules/default.nix.
{ libPath, scenariosJson }:

let
  lib = import libPath;
  pkgs = import ./fake-pkgs.nix { inherit lib; };
  flake = (import ../../flake.nix).outputs {
    self = flake;
    nixpkgs = { inherit lib; };
    microvm = { };
  };

  modulesFor =
    scenario:
    if scenario._flake or false then
      [
        flake.nixosModules.default
        flake.nixosModules.coordinator
      ]
    else
      [ ../../nix/modules ];

  evalScenario =
    scenario:
    let
      inherit
        (lib.evalModules {
          modules = [
            ./stubs.nix
            { _module.args.pkgs = pkgs; }
            (removeAttrs scenario [ "_flake" ])
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
          environment
          serviceConfig
          unitConfig
          ;
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
    };
in
lib.mapAttrs (_: evalScenario) (builtins.fromJSON scenariosJson)
