# services.mxvm.agent: the host agent. It registers this host with a coordinator, creates a
# bridge and one tap per microVM, binds GPUs to vfio-pci, and runs the hypervisors.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    attrValues
    concatStringsSep
    elem
    filterAttrs
    getExe
    hasPrefix
    last
    literalExpression
    mapAttrsToList
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    optional
    optionals
    splitString
    stringLength
    toInt
    types
    ;

  cfg = config.services.mxvm.agent;
  opt = "services.mxvm.agent";
  gpu = cfg.gpuPassthrough;
  settingsFormat = pkgs.formats.toml { };

  stateDir = "/var/lib/mxvm-agent";
  drivers = cfg.settings.drivers;

  configFile = settingsFormat.generate "mxvm-agent.toml" (
    filterAttrs (_: v: v != null) cfg.settings
  );

  # AMD's IOMMU is on wherever the firmware enables it; amd_iommu=on is the conventional
  # explicit switch (and what the assertion below looks for). iommu=pt: host devices
  # keep identity mappings, so only passed-through devices pay for translation.
  iommuParams = {
    intel = [
      "intel_iommu=on"
      "iommu=pt"
    ];
    amd = [
      "amd_iommu=on"
      "iommu=pt"
    ];
  };
  # Whether some IOMMU switch is on the kernel command line, ours or the user's.
  hasIommuParam = builtins.any (
    p: hasPrefix "intel_iommu=on" p || hasPrefix "amd_iommu=on" p
  ) config.boot.kernelParams;

  vfioModules = [
    "vfio_pci"
    "vfio"
    "vfio_iommu_type1"
  ];

  apiPort = toInt (last (splitString ":" cfg.settings.api_listen));
  apiOnLoopback = hasPrefix "127." cfg.settings.api_listen || hasPrefix "[::1]" cfg.settings.api_listen;

  hostVolumes = attrValues cfg.settings.host_volumes;
  # ProtectHome hides these trees entirely; ReadWritePaths cannot reopen a path inside.
  volumeUnderHome = builtins.any (
    p: hasPrefix "/home/" p || hasPrefix "/root/" p || hasPrefix "/run/user/" p
  ) hostVolumes;

  # The agent writes /proc/sys (IPv4 forwarding for NAT) and /sys/bus/pci (VFIO binding).
  writesKernelTunables = cfg.settings.nat || gpu.enable;
in
{
  options.services.mxvm.agent = {
    enable = mkEnableOption "the mxvm host agent, which runs allocations as microVMs";

    package = mkPackageOption pkgs "mxvm" { };

    qemuPackage = mkPackageOption pkgs "qemu_kvm" { };

    cloudHypervisorPackage = mkPackageOption pkgs "cloud-hypervisor" { };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open the port of {option}`${opt}.settings.api_listen`: the coordinator calls the
        agent's API there for allocation logs and exec.
      '';
    };

    agentTokenFile = mkOption {
      type = types.nullOr (types.pathWith {
        inStore = false;
        absolute = true;
      });
      default = null;
      example = "/run/secrets/mxvm-agent-token";
      description = ''
        File holding one of the coordinator's agent tokens, passed to the service with
        systemd's `LoadCredential` (read as root, never copied into the Nix store).
      '';
    };

    gpuPassthrough = {
      enable = mkEnableOption "GPU passthrough: IOMMU kernel parameters, the vfio modules and /dev/vfio access";

      iommu = mkOption {
        type = types.nullOr (types.enum [
          "intel"
          "amd"
        ]);
        default = null;
        example = "amd";
        description = ''
          CPU vendor whose IOMMU to switch on (`intel_iommu=on` or `amd_iommu=on`, with
          `iommu=pt`). Leave null only if {option}`boot.kernelParams` already does it.
        '';
      };

      vfioIds = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "10de:2330" ];
        description = ''
          vendor:device IDs vfio-pci claims at boot, before a host driver can. Optional:
          the agent binds whole IOMMU groups to vfio-pci on demand.
        '';
      };
    };

    images = mkOption {
      type = types.attrsOf types.package;
      default = { };
      example = literalExpression "{ agent-guest = mxvm.packages.x86_64-linux.agent-guest-image; }";
      description = ''
        Guest images built by Nix, linked into the image directory as `<name>/`, each with
        `vmlinuz`, `initrd.img` and `manifest.json`. One image serves every allocation: the
        agent passes each VM's address, MAC and devices at run time.
      '';
    };

    settings = mkOption {
      default = { };
      description = ''
        mxvm's agent settings (`mxvm.config.AgentSettings`), rendered to the TOML file
        named by `MXVM_CONFIG`. The agent token does not belong here: use
        {option}`${opt}.agentTokenFile`.
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          url = mkOption {
            type = types.str;
            default = "http://127.0.0.1:8470";
            example = "http://coordinator.example:8470";
            description = "The coordinator's URL.";
          };
          node_name = mkOption {
            type = types.str;
            default = config.networking.hostName;
            defaultText = literalExpression "config.networking.hostName";
            description = "Name this host registers under.";
          };
          api_listen = mkOption {
            type = types.str;
            default = "127.0.0.1:8471";
            example = "0.0.0.0:8471";
            description = "host:port of the agent's own API (allocation logs and exec for the coordinator).";
          };
          address = mkOption {
            type = types.str;
            default = "";
            example = "10.0.0.12";
            description = "Address the coordinator reaches this agent's API on; empty: the host part of `api_listen`.";
          };
          state_dir = mkOption {
            type = types.str;
            default = stateDir;
            description = "The agent's state: VM run directories, VFIO bindings, IP leases.";
          };
          images_dir = mkOption {
            type = types.str;
            default = "${stateDir}/images";
            description = "Where guest images live ({option}`${opt}.images` are linked here).";
          };
          drivers = mkOption {
            type = types.nonEmptyListOf (types.enum [
              "qemu"
              "cloud-hypervisor"
              "libvirt"
            ]);
            default = [ "qemu" ];
            description = "Hypervisor drivers to offer; their packages go on the unit's PATH.";
          };
          bridge = mkOption {
            type = types.str;
            default = "mxvm0";
            description = "Bridge the guests' taps join (a Linux interface name: at most 15 bytes).";
          };
          nat = mkOption {
            type = types.bool;
            default = false;
            description = "Masquerade guest traffic out of {option}`${opt}.settings.uplink`.";
          };
          uplink = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "eth0";
            description = "Egress interface for NAT.";
          };
          reserved_cpu_millicores = mkOption {
            type = types.ints.unsigned;
            default = 0;
            description = "CPU kept back for the host (1000 = one core).";
          };
          reserved_memory_mb = mkOption {
            type = types.ints.unsigned;
            default = 0;
            description = "Memory kept back for the host, in MiB.";
          };
          reserved_disk_mb = mkOption {
            type = types.ints.unsigned;
            default = 0;
            description = "Disk kept back for the host, in MiB.";
          };
          host_volumes = mkOption {
            type = types.attrsOf types.str;
            default = { };
            example = {
              datasets = "/srv/datasets";
            };
            description = "Named host directories jobs may mount; the unit may write them.";
          };
        };
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = cfg.agentTokenFile != null;
          message = "${opt}.agentTokenFile must name a file holding an agent token of the coordinator.";
        }
        {
          assertion = stringLength cfg.settings.bridge <= 15;
          message = "${opt}.settings.bridge is \"${cfg.settings.bridge}\", longer than the kernel's 15-byte interface name limit.";
        }
        {
          assertion = cfg.settings.nat -> cfg.settings.uplink != null;
          message = "${opt}.settings.nat is true, so ${opt}.settings.uplink must name the egress interface.";
        }
        {
          assertion = gpu.enable -> (gpu.iommu != null || hasIommuParam);
          message = "${opt}.gpuPassthrough.enable needs an IOMMU: set ${opt}.gpuPassthrough.iommu to \"intel\" or \"amd\" (or put intel_iommu=on / amd_iommu=on in boot.kernelParams).";
        }
        {
          assertion = elem "libvirt" drivers -> config.virtualisation.libvirtd.enable;
          message = "${opt}.settings.drivers includes \"libvirt\", so virtualisation.libvirtd.enable must be true.";
        }
      ];

      warnings = optional (cfg.openFirewall && apiOnLoopback) "${opt}.openFirewall opens port ${toString apiPort}, but ${opt}.settings.api_listen is ${cfg.settings.api_listen}.";

      networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ apiPort ];

      # The agent creates taps and bridges through netlink; loading these at boot lets the
      # unit keep ProtectKernelModules.
      boot.kernelModules = [
        "tun"
        "bridge"
        "vhost_net"
      ];

      systemd.tmpfiles.rules = [
        "d ${stateDir} 0700 root root - -"
        "d ${cfg.settings.images_dir} 0755 root root - -"
      ]
      ++ mapAttrsToList (name: image: "L+ ${cfg.settings.images_dir}/${name} - - - - ${image}") cfg.images;

      systemd.services.mxvm-agent = {
        description = "mxvm host agent";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ] ++ optional (elem "libvirt" drivers) "libvirtd.service";
        requires = optional (elem "libvirt" drivers) "libvirtd.service";

        path =
          optional (elem "qemu" drivers) cfg.qemuPackage
          ++ optional (elem "cloud-hypervisor" drivers) cfg.cloudHypervisorPackage
          ++ optional cfg.settings.nat pkgs.nftables;

        environment = {
          MXVM_CONFIG = "${configFile}";
          PYTHONUNBUFFERED = "1";
        };

        serviceConfig = {
          ExecStart = "${getExe cfg.package} agent";
          Type = "exec";
          Restart = "always";
          RestartSec = 5;
          # QEMU daemonizes into this unit's cgroup. KillMode=process stops only the agent on
          # restart or upgrade, so running VMs stay up and the new agent re-adopts them
          # (Driver.recover: pidfile + QMP socket in each run directory).
          KillMode = "process";
          LoadCredential = optional (cfg.agentTokenFile != null) "mxvm_agent_token:${cfg.agentTokenFile}";
          StateDirectory = baseNameOf stateDir;
          StateDirectoryMode = "0700";
          WorkingDirectory = stateDir;

          # uid 0, so root-owned device nodes (/dev/kvm, /dev/vfio/N) and sysfs files open
          # without CAP_DAC_OVERRIDE; but only CAP_NET_ADMIN (taps, bridge, nftables). VFIO
          # binding is plain writes to root-owned sysfs files (driver_override, unbind,
          # drivers_probe), which need no CAP_SYS_ADMIN.
          CapabilityBoundingSet = [ "CAP_NET_ADMIN" ];
          AmbientCapabilities = [ "CAP_NET_ADMIN" ];
          DevicePolicy = "closed";
          DeviceAllow = [
            "/dev/kvm rw"
            "/dev/net/tun rw"
            "/dev/vhost-net rw"
          ]
          ++ optionals gpu.enable [
            "/dev/vfio/vfio rw"
            "char-vfio rw" # /dev/vfio/<group>: one node per IOMMU group
          ];
          # VFIO pins all guest memory.
          LimitMEMLOCK = mkIf gpu.enable "infinity";
          ProtectKernelTunables = !writesKernelTunables;
          ReadWritePaths = hostVolumes;
          ProtectHome = !volumeUnderHome;

          LockPersonality = true;
          NoNewPrivileges = true;
          PrivateTmp = true;
          ProtectClock = true;
          ProtectControlGroups = true;
          ProtectHostname = true;
          ProtectKernelLogs = true;
          ProtectKernelModules = true;
          ProtectSystem = "strict";
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
            "AF_NETLINK"
          ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          SystemCallArchitectures = "native";
          UMask = "0077";
          # Not set, on purpose: MemoryDenyWriteExecute (QEMU's TCG fallback JITs guest code)
          # and SystemCallFilter (the hypervisors inherit it; they install their own seccomp
          # filters: QEMU -sandbox, cloud-hypervisor's per-thread filters).
        };
      };
    }

    (mkIf cfg.settings.nat {
      boot.kernel.sysctl."net.ipv4.ip_forward" = 1;
    })

    (mkIf gpu.enable {
      boot.kernelParams =
        optionals (gpu.iommu != null) iommuParams.${gpu.iommu}
        ++ optional (gpu.vfioIds != [ ]) "vfio-pci.ids=${concatStringsSep "," gpu.vfioIds}";
      boot.kernelModules = vfioModules;
      # In the initrd too, so vfio-pci claims vfioIds before nouveau or nvidia can.
      boot.initrd.kernelModules = optionals (gpu.vfioIds != [ ]) vfioModules;
    })
  ]);
}
