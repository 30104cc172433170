"""Count the bytes a client really fetches: a TCP relay between it and the S3 server.

Why: what a restore reads from the store is not what it writes out. A subset fetches
whole GETs around its ranges (and whole verification blocks where restores check
them); only the wire says how much. The relay forwards every connection to the real
endpoint unchanged (SigV4 signs the Host header the client sent, so signatures hold)
and counts the bytes coming back, response heads included (a few hundred bytes per
GET). It adds a copy per byte, so runs through it are counted, not timed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

BUFFER = 256 * 1024
ACCEPT_POLL_S = 0.2


class Relay:
    """`with Relay(host, port) as relay:` listens on 127.0.0.1:relay.port;
    relay.downstream / relay.upstream are the bytes moved so far, relay.connections
    the connections accepted."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream_address = (host, port)
        self.downstream = 0  # server -> client
        self.upstream = 0  # client -> server
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(ACCEPT_POLL_S)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="relay-accept", daemon=True)

    def start(self) -> Relay:
        self._acceptor.start()
        return self

    def reset(self) -> None:
        with self._lock:
            self.downstream = self.upstream = self.connections = 0

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream_address, timeout=30)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets += [client, server]
            for source, sink, down in ((client, server, False), (server, client, True)):
                thread = threading.Thread(
                    target=self._pump, args=(source, sink, down), name="relay-pump", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, down: bool) -> None:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        try:
            while True:
                count = source.recv_into(buffer)
                if not count:
                    break
                with self._lock:  # counted before it is passed on: a client that has it
                    if down:  # has been counted
                        self.downstream += count
                    else:
                        self.upstream += count
                sink.sendall(view[:count])
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
