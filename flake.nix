{
  description = "mxvm: a microVM orchestrator for fleets of AI agents";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    microvm = {
      url = "github:microvm-nix/microvm.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      microvm,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The module for one service, with its package defaulting to this flake's build for
      # the host's pkgs. The key lets evalModules drop the duplicate when a configuration
      # imports both `default` and `coordinator` (or `agent`).
      withPackage =
        service:
        { pkgs, ... }:
        {
          key = "mxvm#nixosModules.${service}";
          _file = "${toString ./flake.nix}#nixosModules.${service}";
          imports = [ ./nix/modules/${service}.nix ];
          services.mxvm.${service}.package = lib.mkDefault (pkgs.callPackage ./nix/package.nix { });
        };

      agentGuest = lib.nixosSystem {
        modules = [
          microvm.nixosModules.microvm
          ./nix/microvms/agent-guest.nix
          { nixpkgs.hostPlatform = "x86_64-linux"; }
        ];
      };
    in
    {
      overlays.default = final: _prev: { mxvm = final.callPackage ./nix/package.nix { }; };

      packages = forAllSystems (
        pkgs:
        {
          default = pkgs.callPackage ./nix/package.nix { };
        }
        // lib.optionalAttrs (pkgs.stdenv.hostPlatform.system == "x86_64-linux") {
          agent-guest-image = self.nixosConfigurations.agent-guest.config.system.build.mxvmImage;
          agent-guest-runner = self.nixosConfigurations.agent-guest.config.microvm.declaredRunner;
        }
      );

      nixosModules = {
        coordinator = withPackage "coordinator";
        agent = withPackage "agent";
        default = {
          imports = [
            self.nixosModules.coordinator
            self.nixosModules.agent
          ];
        };
      };

      nixosConfigurations.agent-guest = agentGuest;

      checks = lib.genAttrs [ "x86_64-linux" ] (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
        in
        {
          package = self.packages.${system}.default;
          vm-test = pkgs.testers.runNixOSTest (import ./nix/tests/vm-test.nix { inherit self; });
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          # mxvm's own dependencies (propagated Python packages), plus the tools to test it.
          inputsFrom = [ (pkgs.callPackage ./nix/package.nix { }) ];
          packages = [
            (pkgs.python3.withPackages (ps: [
              ps.pytest
              ps.pytest-asyncio
              ps.pytest-timeout
              ps.hypothesis
              ps.mypy
            ]))
            pkgs.postgresql
            pkgs.redis
            pkgs.qemu
            pkgs.just
            pkgs.nftables
            pkgs.iproute2
            pkgs.ruff
          ];
          shellHook = ''
            export PYTHONPATH=$PWD''${PYTHONPATH:+:$PYTHONPATH}
          '';
        };
      });
    };
}
