# services.mxvm.coordinator: the REST API, scheduler and leader loops, with Postgres and
# Redis either created on this host or reached through URLs kept in credential files.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    filterAttrs
    getExe
    hasInfix
    literalExpression
    mapAttrsToList
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    optional
    optionals
    types
    ;

  cfg = config.services.mxvm.coordinator;
  opt = "services.mxvm.coordinator";
  settingsFormat = pkgs.formats.toml { };

  # Static user: Postgres peer authentication maps the socket peer's user name to the
  # database role, which a DynamicUser's per-boot uid makes awkward.
  user = "mxvm";
  stateDir = "/var/lib/mxvm-coordinator";
  redisSocket = "/run/redis-mxvm/redis.sock";

  # Secrets reach the process as files in $CREDENTIALS_DIRECTORY named mxvm_<field>, which
  # mxvm.config reads; they never enter the Nix store or the unit's environment.
  credentials = filterAttrs (_: file: file != null) {
    mxvm_admin_token = cfg.adminTokenFile;
    mxvm_agent_tokens = cfg.agentTokensFile;
    mxvm_database_url = cfg.database.urlFile;
    mxvm_redis_url = cfg.redis.urlFile;
  };

  # TOML has no null: an unset field is left out, so the pydantic default applies.
  configFile = settingsFormat.generate "mxvm-coordinator.toml" (
    filterAttrs (_: v: v != null) cfg.settings
  );

  hostPort =
    host: port: if hasInfix ":" host then "[${host}]:${toString port}" else "${host}:${toString port}";

  secretFile =
    what:
    mkOption {
      type = types.nullOr (types.pathWith {
        inStore = false;
        absolute = true;
      });
      default = null;
      example = "/run/secrets/mxvm-${what}";
      description = ''
        File holding the ${what}, passed to the service with systemd's `LoadCredential`
        (so it is read as root and never copied into the Nix store).
      '';
    };
in
{
  options.services.mxvm.coordinator = {
    enable = mkEnableOption "the mxvm coordinator (REST API, scheduler and leader loops)";

    package = mkPackageOption pkgs "mxvm" { };

    listenAddress = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = "Address the REST API listens on.";
    };

    port = mkOption {
      type = types.port;
      default = 8470;
      description = "TCP port of the REST API.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open {option}`${opt}.port` in the firewall for host agents and clients.";
    };

    adminTokenFile = secretFile "admin bearer token";
    agentTokensFile = secretFile "agent bearer tokens (one per line)";

    database = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Create a local PostgreSQL database `mxvm` owned by the `mxvm` user, reached over
          the unix socket with peer authentication (no password).
        '';
      };
      urlFile = secretFile "PostgreSQL URL (it may contain a password)";
    };

    redis = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = "Run a local Redis (`services.redis.servers.mxvm`) on a unix socket.";
      };
      urlFile = secretFile "Redis URL (it may contain a password)";
    };

    settings = mkOption {
      default = { };
      description = ''
        mxvm's coordinator settings (`mxvm.config.CoordinatorSettings`), rendered to the TOML
        file named by `MXVM_CONFIG`. Secrets do not belong here: use the `*File` options.
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          listen = mkOption {
            type = types.str;
            default = hostPort cfg.listenAddress cfg.port;
            defaultText = literalExpression ''"''${listenAddress}:''${toString port}"'';
            description = "host:port of the REST API.";
          };
          database_url = mkOption {
            type = types.nullOr types.str;
            default = if cfg.database.createLocally then "postgresql:///mxvm?host=/run/postgresql" else null;
            defaultText = literalExpression ''if database.createLocally then "postgresql:///mxvm?host=/run/postgresql" else null'';
            description = "PostgreSQL URL without a password; one with a password goes in {option}`${opt}.database.urlFile`.";
          };
          redis_url = mkOption {
            type = types.nullOr types.str;
            default = if cfg.redis.createLocally then "unix://${redisSocket}" else null;
            defaultText = literalExpression ''if redis.createLocally then "unix://${redisSocket}" else null'';
            description = "Redis URL without a password; one with a password goes in {option}`${opt}.redis.urlFile`.";
          };
          state_dir = mkOption {
            type = types.str;
            default = stateDir;
            description = "The coordinator's state directory.";
          };
          node_subnet_pool = mkOption {
            type = types.str;
            default = "10.87.0.0/16";
            description = "Pool the coordinator carves each node's guest subnet from.";
          };
          node_subnet_prefix = mkOption {
            type = types.ints.between 8 30;
            default = 24;
            description = "Prefix length of each node's guest subnet.";
          };
          heartbeat_ttl_s = mkOption {
            type = types.numbers.positive;
            default = 15.0;
            description = "Seconds without a heartbeat after which a node is lost.";
          };
          log_level = mkOption {
            type = types.enum [
              "DEBUG"
              "INFO"
              "WARNING"
              "ERROR"
            ];
            default = "INFO";
            description = "Log level.";
          };
        };
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = cfg.database.createLocally || cfg.database.urlFile != null || cfg.settings.database_url != null;
          message = "${opt}.database.createLocally is false, so set ${opt}.database.urlFile (or ${opt}.settings.database_url) to reach PostgreSQL.";
        }
        {
          assertion = !(cfg.database.createLocally && cfg.database.urlFile != null);
          message = "${opt}.database.urlFile is set, but ${opt}.database.createLocally is true: the credential would override the local database. Set one of them.";
        }
        {
          assertion = cfg.redis.createLocally || cfg.redis.urlFile != null || cfg.settings.redis_url != null;
          message = "${opt}.redis.createLocally is false, so set ${opt}.redis.urlFile (or ${opt}.settings.redis_url) to reach Redis.";
        }
        {
          assertion = !(cfg.redis.createLocally && cfg.redis.urlFile != null);
          message = "${opt}.redis.urlFile is set, but ${opt}.redis.createLocally is true: the credential would override the local Redis. Set one of them.";
        }
      ];

      warnings =
        optional (cfg.agentTokensFile == null) "${opt}.agentTokensFile is unset: no host agent can register."
        ++ optional (
          cfg.openFirewall && builtins.elem cfg.listenAddress [ "127.0.0.1" "::1" "localhost" ]
        ) "${opt}.openFirewall opens port ${toString cfg.port}, but ${opt}.listenAddress is ${cfg.listenAddress}.";

      users.users.${user} = {
        isSystemUser = true;
        group = user;
        description = "mxvm coordinator";
      };
      users.groups.${user} = { };

      networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ cfg.port ];

      systemd.services.mxvm-coordinator = {
        description = "mxvm coordinator";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        # postgresql.target (newer nixpkgs) includes the ensureUsers/ensureDatabases step;
        # ordering after a unit that does not exist is a no-op, so both are listed.
        after =
          [ "network-online.target" ]
          ++ optionals cfg.database.createLocally [
            "postgresql.service"
            "postgresql.target"
          ]
          ++ optional cfg.redis.createLocally "redis-mxvm.service";
        requires =
          optional cfg.database.createLocally "postgresql.service"
          ++ optional cfg.redis.createLocally "redis-mxvm.service";

        environment = {
          MXVM_CONFIG = "${configFile}";
          PYTHONUNBUFFERED = "1";
        };

        serviceConfig = {
          # Migrations run inside the coordinator, under a Postgres advisory lock.
          ExecStart = "${getExe cfg.package} coordinator";
          Type = "exec";
          Restart = "on-failure";
          RestartSec = 5;
          User = user;
          Group = user;
          SupplementaryGroups = optional cfg.redis.createLocally config.services.redis.servers.mxvm.group;
          LoadCredential = mapAttrsToList (name: file: "${name}:${file}") credentials;
          StateDirectory = baseNameOf stateDir;
          StateDirectoryMode = "0700";
          WorkingDirectory = stateDir;

          # Hardening: an HTTP server that talks to Postgres and Redis needs nothing more.
          CapabilityBoundingSet = [ "" ];
          AmbientCapabilities = [ "" ];
          DevicePolicy = "closed";
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          NoNewPrivileges = true;
          PrivateDevices = true;
          PrivateTmp = true;
          ProcSubset = "pid";
          ProtectClock = true;
          ProtectControlGroups = true;
          ProtectHome = true;
          ProtectHostname = true;
          ProtectKernelLogs = true;
          ProtectKernelModules = true;
          ProtectKernelTunables = true;
          ProtectProc = "invisible";
          ProtectSystem = "strict";
          RemoveIPC = true;
          RestrictAddressFamilies = [
            "AF_INET"
            "AF_INET6"
            "AF_UNIX"
          ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [
            "@system-service"
            "~@privileged"
            "~@resources"
          ];
          UMask = "0077";
        };
      };
    }

    (mkIf cfg.database.createLocally {
      services.postgresql = {
        enable = true;
        ensureDatabases = [ user ];
        ensureUsers = [
          {
            name = user;
            ensureDBOwnership = true;
          }
        ];
      };
    })

    (mkIf cfg.redis.createLocally {
      services.redis.servers.mxvm = {
        enable = true;
        port = 0; # unix socket only
        unixSocket = redisSocket;
        unixSocketPerm = 660;
      };
    })
  ]);
}
