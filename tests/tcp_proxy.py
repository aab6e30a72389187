"""A small threaded TCP proxy on 127.0.0.1 that a test can cut and restore: a network partition.

``TcpProxy(upstream)`` listens on a free loopback port and relays every connection to ``upstream()``
(a callable, so that the target may be decided late, e.g. once a broker has picked its port).
:meth:`TcpProxy.cut` resets every relayed connection and from then on resets every new one right
after accepting it, counting them (:attr:`TcpProxy.refused`: each is a client's connection
attempt); :meth:`TcpProxy.restore` relays again.

Connections from the processes in ``exempt_pids`` (by default none) are never cut: with the test
process exempt, a test's own clients (a publisher upstream of the worker, a reader of the alerts)
keep their path to the broker while a worker process loses its own -- a partition between the
worker and the broker, not a broker outage. Linux only (the connecting process is found in
``/proc``).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["TcpProxy", "socket_owner_pids"]

_HOST = "127.0.0.1"


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0): the peer sees ``connection reset``, at once.

    The shutdown first wakes a thread blocked in ``recv`` on it (a bare close would not)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _hex_address(port: int) -> str:
    """``127.0.0.1:port`` as ``/proc/net/tcp`` writes it (IPv4 in host byte order, port in hex)."""
    ip = socket.inet_aton(_HOST)
    return f"{struct.unpack('<I', ip)[0]:08X}:{port:04X}"


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the loopback socket ``127.0.0.1:local_port`` → ``127.0.0.1:remote_port``."""
    local, remote = _hex_address(local_port), _hex_address(remote_port)
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[1] == local and fields[2] == remote:
                    return fields[9]
    except OSError:
        return None
    return None


def socket_owner_pids(local_port: int, remote_port: int, candidates: Iterable[int]) -> set[int]:
    """Those of ``candidates`` that hold the socket 127.0.0.1:local_port → 127.0.0.1:remote_port."""
    inode = _socket_inode(local_port, remote_port)
    if inode is None:
        return set()
    target = f"socket:[{inode}]"
    owners = set()
    for pid in candidates:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    owners.add(pid)
                    break
            except OSError:
                continue
    return owners


class _Relay:
    """One client connection and its upstream connection, pumped both ways by two threads."""

    def __init__(self, client: socket.socket, upstream: socket.socket, exempt: bool):
        self.client, self.upstream, self.exempt = client, upstream, exempt
        self.closed = threading.Event()

    def start(self) -> None:
        for source, sink in ((self.client, self.upstream), (self.upstream, self.client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True, name="tcp-proxy-pump").start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        self.close()

    def close(self, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if reset:
                _reset(sock)
            else:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


class TcpProxy:
    """A cuttable TCP relay from ``127.0.0.1:port`` to ``upstream()``; see the module docstring."""

    def __init__(self, upstream: Callable[[], tuple[str, int]], *, exempt_pids: Iterable[int] = ()):
        self.upstream = upstream
        self.exempt_pids = set(exempt_pids)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((_HOST, 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._relays: list[_Relay] = []
        self._cut = False
        self._stopped = False
        self.accepted = 0
        #: Monotonic times of the connections refused (reset at once) while cut, exempt ones excluded.
        self.refused: list[float] = []
        #: Monotonic times of the connections reset because the upstream refused them (it is down),
        #: exempt ones excluded.
        self.upstream_down: list[float] = []
        #: Connections reset by :meth:`cut`.
        self.severed = 0
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"tcp-proxy-{self.port}")

    @property
    def address(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def _exempt(self, peer_port: int) -> bool:
        return bool(self.exempt_pids) and bool(socket_owner_pids(peer_port, self.port, self.exempt_pids))

    def _serve(self) -> None:
        while True:
            try:
                client, (_, peer_port) = self._listener.accept()
            except OSError:
                return  # the listener was closed: stopped
            if self._stopped:
                _reset(client)
                return
            exempt = self._exempt(peer_port)
            with self._lock:
                self.accepted += 1
                if self._cut and not exempt:
                    self.refused.append(time.monotonic())
                    _reset(client)
                    continue
            try:
                upstream = socket.create_connection(self.upstream(), timeout=5.0)
                upstream.settimeout(None)
            except OSError:
                if not exempt:
                    with self._lock:
                        self.upstream_down.append(time.monotonic())
                _reset(client)  # the upstream itself is down: the client sees the same as a cut
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            relay = _Relay(client, upstream, exempt)
            with self._lock:
                self._relays = [r for r in self._relays if not r.closed.is_set()]
                self._relays.append(relay)
            relay.start()

    def cut(self) -> int:
        """Reset every relayed (non-exempt) connection and refuse new ones; returns how many were reset."""
        with self._lock:
            self._cut = True
            victims = [r for r in self._relays if not r.exempt and not r.closed.is_set()]
        for relay in victims:
            relay.close(reset=True)
        self.severed += len(victims)
        return len(victims)

    def restore(self) -> None:
        """Relay new connections again."""
        with self._lock:
            self._cut = False

    def attempts_between(self, start: float, end: float) -> int:
        """Connection attempts that failed between two ``time.monotonic()`` instants: refused while cut,
        or reset because the upstream was down."""
        with self._lock:
            return sum(start <= t <= end for t in self.refused + self.upstream_down)

    def close(self) -> None:
        self._stopped = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            relays, self._relays = self._relays, []
        for relay in relays:
            relay.close()
        self._thread.join(timeout=5.0)
