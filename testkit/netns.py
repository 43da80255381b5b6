"""Several "hosts" on one Linux machine, for multi-host tests: network namespaces joined by a private
bridge, and a TCP forwarder that puts a loopback-only service on the bridge.

``private_network(["w1", "w2"])`` makes a bridge ``brr-TAG`` in the root namespace with address
10.213.X.1/24 (the root namespace is the "storage+broker host") and, per name, a namespace ``rr-TAG-NAME``
with ``lo`` up and a veth into the bridge (10.213.X.11, .12, ...). Nothing else is touched: no default
route, no forwarding, no other interface; traffic stays on the bridge, in the namespaces and on
loopback. On the way out, even after a failure, it kills every process left in its namespaces and deletes
the namespaces, the veths and the bridge. Needs root (``namespace_support`` says why it cannot)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

SUBNET_PREFIX = "10.213"
FIRST_HOST_OCTET = 11


class NetnsError(RuntimeError):
    """Raised when an ``ip`` command that builds or tears down the private network fails."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; with ``check``, a failure raises ``NetnsError`` with its message."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def namespace_support() -> str | None:
    """Why network namespaces cannot be made here (not root, no ``ip``, refused), or None when they can:
    makes and deletes a throwaway namespace and bridge to find out."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add), and this runs as a normal user"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    tag = secrets.token_hex(2)
    namespace, bridge = f"rr-probe-{tag}", f"brr-p{tag}"
    try:
        made = ip("netns", "add", namespace, check=False)
        if made.returncode != 0:
            return f"ip netns add failed: {made.stderr.strip()}"
        made = ip("link", "add", bridge, "type", "bridge", check=False)
        if made.returncode != 0:
            return f"ip link add type bridge failed: {made.stderr.strip()}"
        return None
    finally:
        ip("link", "del", bridge, check=False)
        ip("netns", "del", namespace, check=False)


@dataclass(frozen=True)
class Host:
    """A worker host: the namespace ``namespace`` at ``address``, plugged into the bridge by ``veth``."""

    name: str
    namespace: str
    address: str
    veth: str  # the bridge's end, in the root namespace
    inner_veth: str  # the host's end, in its namespace

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def cut_off(self) -> None:
        """Unplug the host: its veth on the bridge goes down. Its processes live on, unable to reach
        anything; packets already sent to it are lost."""
        ip("link", "set", self.veth, "down")

    def pids(self) -> list[int]:
        result = ip("netns", "pids", self.namespace, check=False)
        return [int(word) for word in result.stdout.split()]

    def kill_processes(self, timeout_s: float = 10) -> None:
        """SIGKILL every process in the namespace (they were all started by the test) until none is left."""
        deadline = time.monotonic() + timeout_s
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise NetnsError(f"processes {pids} in {self.namespace} outlived SIGKILL")
            time.sleep(0.05)


@dataclass
class PrivateNetwork:
    """The bridge (``gateway`` is its address in the root namespace) and the hosts plugged into it."""

    tag: str
    bridge: str
    gateway: str
    hosts: dict[str, Host] = field(default_factory=dict)

    def names(self) -> set[str]:
        """The namespaces and links this network makes."""
        made = {self.bridge}
        for host in self.hosts.values():
            made |= {host.namespace, host.veth, host.inner_veth}
        return made

    def leftovers(self) -> list[str]:
        """Which of ``names`` still exist (none after a clean teardown)."""
        namespaces = {
            line.split()[0] for line in ip("netns", "list", check=False).stdout.splitlines() if line
        }
        links = {
            line.split(":")[1].strip().split("@")[0]
            for line in ip("-o", "link", "show", check=False).stdout.splitlines()
            if ":" in line
        }
        return sorted(self.names() & (namespaces | links))


@contextlib.contextmanager
def private_network(names: Sequence[str]) -> Iterator[PrivateNetwork]:
    """A bridge in the root namespace and one namespace per name plugged into it; all removed afterwards,
    their processes killed first."""
    too_long = [name for name in names if not name.isalnum() or len(name) > 6]
    if too_long:
        raise ValueError(f"host names must be 1-6 letters or digits (they end up in link names): {too_long}")
    tag = secrets.token_hex(2)
    subnet = _free_subnet()
    network = PrivateNetwork(tag=tag, bridge=f"brr-{tag}", gateway=f"{subnet}.1")
    try:
        ip("link", "add", network.bridge, "type", "bridge")
        ip("addr", "add", f"{network.gateway}/24", "dev", network.bridge)
        ip("link", "set", network.bridge, "up")
        for index, name in enumerate(names):
            host = Host(
                name=name,
                namespace=f"rr-{tag}-{name}",
                address=f"{subnet}.{FIRST_HOST_OCTET + index}",
                veth=f"rr{tag}-{name}b",
                inner_veth=f"rr{tag}-{name}n",
            )
            network.hosts[name] = host
            _plug(network, host)
        yield network
    finally:
        _tear_down(network)


def _plug(network: PrivateNetwork, host: Host) -> None:
    inner = host.inner_veth
    ip("netns", "add", host.namespace)
    ip("link", "add", host.veth, "type", "veth", "peer", "name", inner)
    ip("link", "set", inner, "netns", host.namespace)
    ip("link", "set", host.veth, "master", network.bridge)
    ip("link", "set", host.veth, "up")
    ip("-n", host.namespace, "link", "set", "lo", "up")
    ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", inner)
    ip("-n", host.namespace, "link", "set", inner, "up")


def _tear_down(network: PrivateNetwork) -> None:
    """Kill, then delete, everything the network made, going on past failures; raise the first at the end."""
    errors: list[Exception] = []
    for host in network.hosts.values():
        try:
            host.kill_processes()
        except NetnsError as error:
            errors.append(error)
        ip("netns", "del", host.namespace, check=False)
        ip("link", "del", host.veth, check=False)  # gone with the namespace's end, unless never moved
    ip("link", "del", network.bridge, check=False)
    left = network.leftovers()
    if left:
        errors.append(NetnsError(f"left behind after teardown: {', '.join(left)}"))
    if errors:
        raise errors[0]


def _free_subnet() -> str:
    """A 10.213.X.0/24 that no address or route of the root namespace uses yet."""
    used = ip("-o", "-4", "addr", "show", check=False).stdout + ip("-4", "route", "show", check=False).stdout
    for _ in range(64):
        subnet = f"{SUBNET_PREFIX}.{100 + secrets.randbelow(150)}"
        if f"{subnet}." not in used:
            return subnet
    raise NetnsError(f"no free {SUBNET_PREFIX}.X.0/24 subnet found")


class TcpForwarder:
    """Relays TCP connections accepted at ``listen`` to ``target``, both ways, from threads of this
    process: puts a service that listens on loopback only (the suite's PostgreSQL) on the bridge.
    ``address`` is where it listens (the port the system chose when ``listen`` asked for 0)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(listen, reuse_port=False)
        self._server.settimeout(0.2)
        self.address: tuple[str, int] = self._server.getsockname()[:2]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._clients: dict[socket.socket, str] = {}  # upstream socket -> the client's address
        self._acceptor = threading.Thread(target=self._accept, name="tcp-forwarder", daemon=True)

    def __enter__(self) -> TcpForwarder:
        self._acceptor.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def upstream_ports(self, client_host: str) -> list[int]:
        """The local ports of the open upstream connections relayed for ``client_host``: how the target
        (PostgreSQL's ``pg_stat_activity.client_port``, say) tells that host's connections apart."""
        with self._lock:
            return [
                int(sock.getsockname()[1])
                for sock, host in self._clients.items()
                if host == client_host and sock in self._open
            ]

    def close(self) -> None:
        """Stop accepting and cut every relayed connection."""
        self._stop.set()
        self._acceptor.join(timeout=5)
        self._server.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
            self._clients.clear()
        for sock in sockets:
            _close(sock)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, peer = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
                self._clients[upstream] = str(peer[0])
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        # One side finished or failed: end both, as a connection through a router would.
        for sock in (source, sink):
            with self._lock:
                self._open.discard(sock)
                self._clients.pop(sock, None)
            _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
