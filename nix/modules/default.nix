# Both services: services.mxvm.coordinator and services.mxvm.agent (each off until enabled).
{
  imports = [
    ./coordinator.nix
    ./agent.nix
  ];
}
