"""The guest side of mxvm: the agent that runs inside each microVM, its wire protocol, and
the host-side client (mxvm.guest.client) that talks to it over QEMU's virtio-serial socket.

Everything imported by the agent (agent, port, protocol, netconf, power, __main__) is
stdlib only: the guest image ships these files next to a bare Python.
"""
