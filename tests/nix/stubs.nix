# Just the NixOS options mxvm's modules set or read, declared with types close enough to
# nixpkgs' that evalModules merges our definitions the way NixOS would (lists
# concatenate, attrsets merge, mkIf/mkDefault resolve). Not NixOS: no activation, no units.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;

  listOfStr = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  freeform = types.submodule { freeformType = types.attrsOf types.anything; };

  # systemd unit options: lists concatenate across definitions, like nixpkgs' unitOption.
  unitValue = types.oneOf [
    types.bool
    types.int
    types.str
    (types.listOf types.str)
  ];

  service = types.submodule {
    options = {
      description = mkOption {
        type = types.str;
        default = "";
      };
      wantedBy = listOfStr;
      wants = listOfStr;
      after = listOfStr;
      requires = listOfStr;
      path = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      environment = mkOption {
        # lazy (NixOS: attrsOf), so eval.nix may leave one value unforced
        type = types.lazyAttrsOf types.str;
        default = { };
      };
      serviceConfig = mkOption {
        type = types.attrsOf unitValue;
        default = { };
      };
      unitConfig = mkOption {
        type = types.attrsOf unitValue;
        default = { };
      };
    };
  };

  redisServer = types.submodule (
    { name, ... }:
    {
      freeformType = types.attrsOf types.anything;
      options.group = mkOption {
        type = types.str;
        default = "redis-${name}";
      };
    }
  );
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = listOfStr;

    users.users = mkOption {
      type = types.attrsOf freeform;
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf freeform;
      default = { };
    };

    networking.hostName = mkOption {
      type = types.str;
      default = "stubhost";
    };
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };

    systemd.services = mkOption {
      type = types.attrsOf service;
      default = { };
    };
    systemd.tmpfiles.rules = listOfStr;

    services.postgresql = {
      enable = lib.mkEnableOption "postgresql";
      ensureDatabases = listOfStr;
      ensureUsers = mkOption {
        type = types.listOf types.attrs;
        default = [ ];
      };
    };
    services.redis.servers = mkOption {
      type = types.attrsOf redisServer;
      default = { };
    };

    virtualisation.libvirtd.enable = lib.mkEnableOption "libvirtd";

    boot.kernelParams = listOfStr;
    boot.kernelModules = listOfStr;
    boot.initrd.kernelModules = listOfStr;
    boot.kernel.sysctl = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    environment.etc = mkOption {
      type = types.attrsOf freeform;
      default = { };
    };

    # For the VM test's nodes and the flake's nixosSystem.
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    virtualisation.cores = mkOption { type = types.ints.positive; };
    virtualisation.memorySize = mkOption { type = types.ints.positive; };
    nixpkgs.hostPlatform = mkOption { type = types.str; };

    # For the microVM guests (nix/microvms): NixOS basics and the microvm.nix options used.
    system.stateVersion = mkOption { type = types.str; };
    system.build = mkOption {
      type = types.lazyAttrsOf types.raw;
      default = { };
    };
    networking.useDHCP = mkOption { type = types.bool; };
    networking.dhcpcd.enable = mkOption { type = types.bool; };
    networking.firewall.enable = mkOption { type = types.bool; };
    boot.initrd.availableKernelModules = listOfStr;
    nix.enable = mkOption { type = types.bool; };
    documentation.enable = mkOption { type = types.bool; };
    fileSystems = mkOption {
      type = types.attrsOf freeform;
      default = { };
    };
    microvm = {
      hypervisor = mkOption { type = types.enum [ "qemu" "cloud-hypervisor" ]; };
      vcpu = mkOption { type = types.ints.positive; };
      mem = mkOption { type = types.ints.positive; };
      interfaces = mkOption { type = types.listOf types.attrs; };
      shares = mkOption { type = types.listOf types.attrs; };
      qemu.extraArgs = listOfStr;
      # microvm.nix derives these from the system; the stub names the /nix/store device, so
      # a test can tell which configuration (runner or image variant) a value came from.
      kernelParams = mkOption {
        type = types.listOf types.str;
        default = [
          "init=/nix/store/00000000000000000000000000000000-toplevel/init"
          "stub.store=${config.fileSystems."/nix/store".device or "store-disk"}"
        ];
      };
      kernel = mkOption { type = types.raw; };
      initrdPath = mkOption { type = types.str; };
      storeDisk = mkOption { type = types.str; };
    };
  };

  config.microvm = {
    kernel = pkgs.linux;
    initrdPath = "${pkgs.initrd}/initrd";
    storeDisk = "${pkgs.storeDisk}";
  };
}
