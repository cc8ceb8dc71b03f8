"""A raw rtnetlink socket for requests whose answer is ready the moment they are sent.

The kernel handles an rtnetlink request inside sendmsg(2), and continues a dump inside
recvmsg(2), so the answer is queued by the time send() returns. Reading it straight away,
without a trip through the event loop, makes a request cost about what the kernel spends
on it. The wait through the loop is kept for safety, never expected.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from pyroute2.netlink.exceptions import NetlinkError

from mxvm.net import netns
from mxvm.net.linkmsg import NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR, Reply, error_code, replies

_NETLINK_ROUTE = 0
_BUFSIZE = 65536  # above the kernel's largest dump batch (32 KiB), so nothing is truncated
_WAIT_S = 10.0


class RouteSocket:
    """One NETLINK_ROUTE socket, opened lazily in `netns` (None: this process's namespace)."""

    def __init__(self, netns_name: str | None) -> None:
        self.netns = netns_name
        self._sock: socket.socket | None = None
        self._seq = 0
        # Held across a request so that, should one ever have to wait, no other request
        # reads its answer; uncontended it costs no trip through the loop.
        self._lock = asyncio.Lock()

    def _open(self) -> socket.socket:
        if self._sock is None:
            # A netlink socket belongs to the namespace it is created in.
            with netns.entered(self.netns):
                kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                sock = socket.socket(socket.AF_NETLINK, kind, _NETLINK_ROUTE)
            sock.bind((0, 0))
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def request(self, *builds: Callable[[int], bytes]) -> list[Reply]:
        """Send build(seq) for each build in one write; return the replies up to each one's
        ack, end of dump, or single answer (a plain get).

        The kernel handles the requests in order, each on its own: one refused does not
        stop the next. After all are answered, the first refusal raises pyroute2's
        NetlinkError."""
        sock = self._open()
        async with self._lock:
            seqs = [self._next_seq() for _ in builds]
            sock.send(b"".join(build(seq) for build, seq in zip(builds, seqs, strict=True)))
            pending = set(seqs)
            out: list[Reply] = []
            refusal: NetlinkError | None = None
            while pending:
                for reply in replies(await self._recv(sock)):
                    if reply.seq not in pending:
                        continue  # the late answer to a request that was given up on
                    if reply.kind in (NLMSG_ERROR, NLMSG_DONE):
                        pending.discard(reply.seq)
                        code = error_code(reply)
                        if code and refusal is None:
                            refusal = NetlinkError(code)
                        continue
                    out.append(reply)
                    if not reply.flags & NLM_F_MULTI:
                        pending.discard(reply.seq)
            if refusal is not None:
                raise refusal
            return out

    def _next_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    @staticmethod
    async def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(_BUFSIZE)
        except BlockingIOError:
            pass
        async with asyncio.timeout(_WAIT_S):
            return await asyncio.get_running_loop().sock_recv(sock, _BUFSIZE)
