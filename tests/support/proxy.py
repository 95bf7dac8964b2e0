"""A TCP proxy the tests can cut: a broker outage without stopping the shared RabbitMQ."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttableProxy:
    """Forwards a local port to a target; `cut()` drops all connections, refuses new ones.

    `hold_replies()` keeps the connections open but holds back what the target sends
    (a broker whose confirms are late) until `release_replies()`. `half_open()` closes the
    target's side only: the target sees the connection end at once, the client sees
    silence, as after a network partition, until its own heartbeats tell it.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._open = threading.Event()
        self._replies = threading.Event()
        self._replies.set()
        self._sockets: list[socket.socket] = []
        self._upstreams: list[socket.socket] = []
        self._silenced: set[socket.socket] = set()  # client sockets left open, unanswered
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        self.restore()

    def restore(self) -> None:
        self._open.set()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def half_open(self) -> None:
        with self._lock:
            self._silenced.update(sock for sock in self._sockets if sock not in self._upstreams)
            for upstream in self._upstreams:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_RDWR)

    def hold_replies(self) -> None:
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    def close(self) -> None:
        self._closed = True
        self.release_replies()
        self.cut()
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
                self._upstreams.append(upstream)
            for source, sink, gate in ((client, upstream, None), (upstream, client, self._replies)):
                threading.Thread(target=self._pump, args=(source, sink, gate), daemon=True).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, gate: threading.Event | None
    ) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if gate is not None:
                    gate.wait()
                if sink in self._silenced:
                    continue
                sink.sendall(data)
        for sock in (source, sink):
            if sock in self._silenced:
                continue  # half open: the client hears nothing, not even the end
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
