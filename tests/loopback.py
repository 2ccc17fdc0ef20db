"""What the loopback fakes (fake_microsoft.py, fake_exchange.py) share: a threaded HTTP(S)
server on 127.0.0.1 that hands every request to its fake's ``_serve(handler)``, started and
stopped from a test (``with fake:``) or run as a process until SIGTERM; the JSON saving of
their fixture data; and the names their generated people get."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import socket
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Self

FIRST_NAMES = ["Anna", "Bram", "Chloe", "Daan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jan",
               "Julia", "Lars", "Lotte", "Mila", "Noah", "Olivia", "Pieter", "Quinn", "Ruben", "Sara",
               "Sem", "Tess", "Thomas", "Vera", "Wout", "Yara", "Zoe", "Liam", "Eva", "Milan"]
LAST_NAMES = ["Jansen", "de Vries", "van Dijk", "Bakker", "Visser", "Smit", "Meijer", "de Boer",
              "Mulder", "de Groot", "Bos", "Vos", "Peters", "Hendriks", "van Leeuwen", "Dekker",
              "Brouwer", "de Wit", "Dijkstra", "Smits", "de Graaf", "van der Meer", "Kok", "Jacobs",
              "Vermeulen", "Schouten", "Willems", "Hoekstra", "Koster", "Prins"]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, fake: Any, context: ssl.SSLContext | None):
        self.fake, self.ssl_context = fake, context
        self.connections: set = set()  # so that stop() can cut the ones clients keep alive
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request, client_address):  # quiet: clients hang up, TLS fails on purpose
        pass


class Handler(BaseHTTPRequestHandler):
    """Hands every request to the fake; a fake's subclass names its server and its methods
    (``do_GET = do_POST = Handler.serve``)."""

    protocol_version = "HTTP/1.1"
    sys_version = ""
    timeout = 60

    def setup(self):
        self.request.settimeout(self.timeout)
        # headers and body go out in separate writes: without this, Nagle + delayed ACK cost 40 ms
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.server.ssl_context is not None:
            self.request = self.server.ssl_context.wrap_socket(self.request, server_side=True)
        with self.server.connections_lock:
            self.server.connections.add(self.request)
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.request)
            try:  # the server closes the raw socket, which wrap_socket detached: close the TLS one
                self.request.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.request.close()

    def log_message(self, *args):
        pass

    def serve(self):
        self.server.fake._serve(self)


class Loopback:
    """The life cycle of a fake: ``start()``/``stop()`` or ``with fake:``. The fake sets
    ``handler`` and ``thread_name`` (class attributes), ``_requested_port`` and ``_context``
    (None: plain HTTP), and may override :meth:`_closing` (before the server shuts down) and
    :meth:`_closed` (after)."""

    handler: type[Handler]
    thread_name = "fake"
    port = 0
    _server: Server | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        self._server = Server(("127.0.0.1", self._requested_port), self.handler, self, self._context)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._closing()
        self._server.shutdown()
        with self._server.connections_lock:
            for conn in list(self._server.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server.server_close()
        self._thread.join(timeout=10)
        self._closed()
        self._server = None

    def _closing(self) -> None:
        pass

    def _closed(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class JsonSaved:
    """Fixture data (a dataclass) saved to and loaded from a JSON file, for a fake run as a process."""

    def to_json(self) -> dict:
        """A JSON-able deep copy (what :meth:`save` writes)."""
        return json.loads(json.dumps({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}))

    @classmethod
    def from_json(cls, data: dict) -> Self:
        return cls(**data)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Self:
        return cls.from_json(json.loads(Path(path).read_text()))


def process_arguments(description: str) -> argparse.ArgumentParser:
    """The options every fake has when it runs as a process; each adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--folder", type=Path, help="where the certificates go (default: a temporary folder)")
    parser.add_argument("--info-file", type=Path, help="write what a client needs (URLs, CA, credentials) as JSON")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    return parser


def serve_until_signalled(make: Callable[[Path], Any], folder: Path | None, info_file: Path | None,
                          prefix: str) -> int:
    """Serve the fake ``make(folder)`` builds until SIGTERM or SIGINT; prints ``READY <port>``
    when it listens and writes ``fake.info()`` to ``info_file``."""
    scratch = None if folder else tempfile.TemporaryDirectory(prefix=prefix)
    fake = make(folder or Path(scratch.name))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    with fake:
        if info_file:
            info_file.write_text(json.dumps(fake.info(), indent=1))
        print("READY", fake.port, flush=True)
        stop.wait()
    if scratch is not None:
        scratch.cleanup()
    return 0
