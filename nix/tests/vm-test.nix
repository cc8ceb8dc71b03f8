# NixOS VM test (pkgs.testers.runNixOSTest): a coordinator node with PostgreSQL and Redis
# created locally, and a host node running the agent with nested virtualisation. The host
# registers, a batch job goes in through the REST API, runs in a microVM booted from the
# Nix-built agent guest image, and completes.
#
# Run: nix build .#checks.x86_64-linux.vm-test -L   (needs KVM with nested virtualisation)
{ self }:

let
  adminToken = "test-admin-token";
  agentToken = "test-agent-token";
  # /etc files copied out of the store (mode set), so the *File options get paths
  # outside the store; for test tokens, store contents are fine.
  secret = text: {
    inherit text;
    mode = "0400";
  };
in
{
  name = "mxvm-coordinator-and-agent";

  nodes = {
    coordinator =
      { pkgs, ... }:
      {
        imports = [ self.nixosModules.coordinator ];
        services.mxvm.coordinator = {
          enable = true;
          listenAddress = "0.0.0.0";
          openFirewall = true;
          adminTokenFile = "/etc/mxvm/admin-token";
          agentTokensFile = "/etc/mxvm/agent-tokens";
        };
        environment.etc."mxvm/admin-token" = secret adminToken;
        environment.etc."mxvm/agent-tokens" = secret agentToken;
        environment.systemPackages = [
          pkgs.curl
          pkgs.jq
        ];
      };

    host =
      { pkgs, ... }:
      {
        imports = [ self.nixosModules.agent ];
        # The test driver starts nodes with `-cpu max`, which passes VMX/SVM through when
        # the machine running the test has nested KVM: this node gets /dev/kvm for its
        # microVMs (asserted below).
        virtualisation = {
          cores = 2;
          memorySize = 3072;
        };
        services.mxvm.agent = {
          enable = true;
          agentTokenFile = "/etc/mxvm/agent-token";
          images.default = self.packages.${pkgs.stdenv.hostPlatform.system}.agent-guest-image;
          # The coordinator calls the agent's API (logs, exec) at host:8471.
          openFirewall = true;
          settings = {
            url = "http://coordinator:8470";
            api_listen = "0.0.0.0:8471";
            address = "host";
            reserved_memory_mb = 512;
          };
        };
        environment.etc."mxvm/agent-token" = secret agentToken;
      };
  };

  testScript = ''
    import json

    api = "curl -sf -H 'Authorization: Bearer ${adminToken}' http://127.0.0.1:8470/api/v1"

    start_all()
    coordinator.wait_for_unit("postgresql.service")
    coordinator.wait_for_unit("redis-mxvm.service")
    coordinator.wait_for_unit("mxvm-coordinator.service")
    coordinator.wait_for_open_port(8470)

    with subtest("the agent registers its host"):
        host.wait_for_unit("mxvm-agent.service")
        host.succeed("test -c /dev/kvm")
        coordinator.wait_until_succeeds(
            f"{api}/nodes | jq -e 'map(select(.name == \"host\" and .status == \"ready\")) | length == 1'",
            timeout=180,
        )

    with subtest("a batch job runs in a microVM and completes"):
        job = {
            "name": "hello",
            "type": "batch",
            "task": {
                "image": "default",
                "memory_mb": 1024,  # the Nix image's min_memory_mb
                "argv": ["sh", "-c", "echo hello from $(uname -r)"],
            },
        }
        out = coordinator.succeed(
            f"{api}/jobs -X POST -H 'Content-Type: application/json' -d '{json.dumps(job)}'"
        )
        job_id = json.loads(out)["job"]["id"]
        coordinator.wait_until_succeeds(
            f"{api}/jobs/{job_id} | jq -e '.status == \"complete\"'", timeout=600
        )
        allocs = json.loads(coordinator.succeed(f"{api}/jobs/{job_id}/allocations"))
        assert [a["client_status"] for a in allocs] == ["complete"], allocs
        assert allocs[0]["exit_code"] == 0, allocs

    with subtest("an agent restart leaves the host registered"):
        host.systemctl("restart mxvm-agent.service")
        host.wait_for_unit("mxvm-agent.service")
        coordinator.succeed(f"{api}/nodes | jq -e '.[0].status == \"ready\"'")
  '';
}
