"""A forwarding HTTP proxy on 127.0.0.1 in front of a local S3 API server, for tests and benches.

Clients use the proxy's URL as their endpoint; every request is forwarded to the server after an
optional delay (the latency of a real object store), counted and logged, or answered with 503
``SlowDown`` (throttling) for the first ``fail_first`` requests or for all of them. It listens on
127.0.0.1 only, forwards to a loopback address only, and stops by itself after ``max_requests``
requests or ``max_seconds`` seconds.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LatencyProxy"]

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}
_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class LatencyProxy:
    """Forward HTTP requests to ``target`` (``http://127.0.0.1:PORT``), ``latency`` seconds late.

    Use as a context manager; ``url`` is the endpoint to give clients, ``log`` the
    ``(method, path, range)`` of every request received, ``count`` their number.
    """

    def __init__(
        self,
        target: str,
        *,
        latency: float = 0.0,
        fail_first: int = 0,
        fail_always: bool = False,
        max_requests: int = 200_000,
        max_seconds: float = 900.0,
    ) -> None:
        parts = urlsplit(target)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.port is None:
            raise ValueError(f"the proxy forwards to a loopback address only, got {target!r}")
        self.target = (parts.hostname, parts.port)
        self.latency = latency
        self.fail_first = fail_first
        self.fail_always = fail_always
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._timer = threading.Timer(max_seconds, self.stop)
        self._timer.daemon = True
        self._stopped = False

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.log)

    def reset(self) -> None:
        """Forget the requests logged so far (the failure counter too)."""
        with self._lock:
            self.log.clear()

    def start(self) -> LatencyProxy:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._timer.cancel()
        threading.Thread(target=self._server.shutdown, daemon=True).start()
        self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(*self.target, timeout=60)
        return conn

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.log.append((self.command, self.path, self.headers.get("Range", "")))
                    n = len(proxy.log)
                if n > proxy.max_requests:
                    threading.Thread(target=proxy.stop, daemon=True).start()
                if proxy.latency:
                    time.sleep(proxy.latency)
                if proxy.fail_always or n <= proxy.fail_first or n > proxy.max_requests:
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOWDOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(_SLOWDOWN)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                for attempt in range(2):  # a kept-alive upstream connection may have closed
                    conn = proxy._connection()
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        response = conn.getresponse()
                        data = response.read()
                        break
                    except (http.client.HTTPException, OSError):
                        conn.close()
                        proxy._local.conn = None
                        if attempt:
                            raise
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                length_header = response.getheader("Content-Length")
                if self.command == "HEAD" and length_header is not None:
                    self.send_header("Content-Length", length_header)
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        return Handler
