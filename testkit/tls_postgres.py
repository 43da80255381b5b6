"""PostgreSQL over TLS for tests, without touching the suite's server (which runs with ``ssl = off``).

A relay on loopback speaks the start of PostgreSQL's wire protocol: it answers a client's SSLRequest
with ``S``, completes the TLS handshake with a certificate of a throwaway CA, and then passes the bytes
of the session, decrypted, to the real server. A GSSENCRequest is declined (``N``), as a server without
GSSAPI does; a client that starts without TLS is disconnected, so a connection through the relay is a
TLS connection or none. libpq on the client side checks the certificate as ``sslmode`` says.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from testkit.services import Certificate, throwaway_certificate

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_GSSENC_REQUEST = struct.pack("!ii", 8, 80877104)
_CHUNK = 65536


@dataclass
class TlsRelay:
    """Where the relay listens, its CA, and what it saw."""

    port: int
    certificate: Certificate
    tls_sessions: int = 0
    refused_plaintext: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, plain_url: str, sslmode: str = "verify-full") -> str:
        """``plain_url`` (a URL of the real server) pointed at the relay, with ``sslmode`` and the CA."""
        parts = urlsplit(plain_url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        query = "&".join(
            filter(None, [parts.query, f"sslmode={sslmode}", f"sslrootcert={self.certificate.ca_file}"])
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@contextmanager
def tls_postgres_relay(scratch: Path, plain_url: str) -> Iterator[TlsRelay]:
    """A TLS relay on loopback in front of the PostgreSQL server of ``plain_url``, closed afterwards."""
    parts = urlsplit(plain_url)
    upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
    certificate = throwaway_certificate(scratch)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    relay = TlsRelay(listener.getsockname()[1], certificate)
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_serve, args=(client, context, upstream, relay), daemon=True).start()

    acceptor = threading.Thread(target=accept, name="tls-postgres-relay", daemon=True)
    acceptor.start()
    try:
        yield relay
    finally:
        stopping.set()
        acceptor.join(timeout=5)
        listener.close()


def _serve(
    client: socket.socket, context: ssl.SSLContext, upstream: tuple[str, int], relay: TlsRelay
) -> None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(client)
        client.settimeout(30)
        request = _read_exactly(client, 8)
        if request == _GSSENC_REQUEST:
            client.sendall(b"N")
            request = _read_exactly(client, 8)
        if request != _SSL_REQUEST:
            with relay.lock:
                relay.refused_plaintext += 1
            return
        client.sendall(b"S")
        try:
            secure = stack.enter_context(context.wrap_socket(client, server_side=True))
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate
        with relay.lock:
            relay.tls_sessions += 1
        server = stack.enter_context(socket.create_connection(upstream, timeout=30))
        secure.settimeout(None)
        server.settimeout(None)
        _pipe(secure, server)


def _pipe(secure: ssl.SSLSocket, server: socket.socket) -> None:
    """Pass bytes both ways until either side closes; one thread, as an SSL socket must not be read and
    written from two at once."""
    while True:
        readable = [secure] if secure.pending() else select.select([secure, server], [], [], 60)[0]
        if not readable:
            return
        for source, sink in ((secure, server), (server, secure)):
            if source in readable:
                try:
                    data = source.recv(_CHUNK)
                except (ssl.SSLError, OSError):
                    return
                if not data:
                    return
                sink.sendall(data)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk
    return data
