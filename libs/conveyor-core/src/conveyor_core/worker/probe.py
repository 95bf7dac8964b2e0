"""A small HTTP server in the worker's main process: `/healthz` for probes, `/metrics`.

Remote control is off (it would declare a pidbox queue per worker), so `celery inspect
ping` is not available; this is the cheap equivalent Kubernetes probes call.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celery import signals
from prometheus_client import CONTENT_TYPE_LATEST

from conveyor_core.metrics import exposition

_ready = threading.Event()


@signals.worker_ready.connect(weak=False)
def _on_ready(**_: Any) -> None:
    _ready.set()


@signals.worker_shutting_down.connect(weak=False)
def _on_shutdown(**_: Any) -> None:
    _ready.clear()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            status = 200 if _ready.is_set() else 503
            body = json.dumps({"status": "ok" if status == 200 else "starting"}).encode()
            self._reply(status, "application/json", body)
        elif self.path == "/metrics":
            self._reply(200, CONTENT_TYPE_LATEST, exposition())
        else:
            self._reply(404, "text/plain", b"not found\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # probes would flood the log
        return


def start_probe_server(host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), _Handler)
    threading.Thread(target=server.serve_forever, name="probe-server", daemon=True).start()
    return server
