# Just the NixOS options mxvm's modules set or read, declared with types close enough to
# nixpkgs' that evalModules merges our definitions the way NixOS would (lists
# concatenate, attrsets merge, mkIf/mkDefault resolve). Not NixOS: no activation, no units.
{ lib, ... }:

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
        type = types.attrsOf types.str;
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
  };
}
