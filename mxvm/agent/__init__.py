"""The host agent: inventory, heartbeats, converging desired allocations into microVMs."""
