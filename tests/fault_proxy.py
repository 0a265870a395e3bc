"""A reverse proxy on loopback that puts storage faults between a client and an S3 server.

Requests are forwarded byte for byte (headers as sent, the Host header included, so a signature the
client computed for the proxy's address stays what the server sees) unless a rule matches:

- ``fail``: answer with an S3 error (503 SlowDown, 403 AccessDenied, 404 NoSuchKey, ...) instead
  of forwarding, for the first ``times`` matching requests or forever;
- ``delay``: wait before the response's headers, or after the headers and part of the body;
- ``drop``: close the connection before any response, or after the headers and part of the body.

Every request is logged (method, path, query, fault applied), so tests can count attempts per key.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}

ERRORS = {
    "SlowDown": (503, "Please reduce your request rate."),
    "ServiceUnavailable": (503, "Service is unable to handle request."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "AccessDenied": (403, "Access Denied"),
    "NoSuchKey": (404, "The specified key does not exist."),
}


@dataclass
class Rule:
    kind: str  # fail | delay | drop
    path: re.Pattern
    method: str | None
    times: int | None  # None: every matching request
    code: str = ""
    seconds: float = 0.0
    body_bytes: int | None = None  # delay/drop after this much of the body; None: before the headers
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        return self.path.search(path) is not None


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # unquoted, e.g. /bucket/dir/key.wav
    query: str
    fault: str | None  # fail:SlowDown, delay, drop, or None when forwarded untouched
    at: float = field(default_factory=time.monotonic)


class FaultProxy:
    """``with FaultProxy(upstream_url) as proxy: ... proxy.url ...``; rules are added while it runs."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._log: list[Request] = []
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed responses
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- rules ------------------------------------------------------------------------------------

    def fail(self, path: str, code: str = "SlowDown", *, times: int | None = None, method: str | None = None) -> Rule:
        if code not in ERRORS:
            raise ValueError(f"unknown S3 error code {code!r}; known: {sorted(ERRORS)}")
        return self._add(Rule("fail", re.compile(path), method, times, code=code))

    def delay(
        self, path: str, seconds: float, *, times: int | None = 1, method: str | None = None,
        body_bytes: int | None = None,
    ) -> Rule:
        return self._add(Rule("delay", re.compile(path), method, times, seconds=seconds, body_bytes=body_bytes))

    def drop(self, path: str, *, times: int | None = 1, method: str | None = None, body_bytes: int | None = None) -> Rule:
        return self._add(Rule("drop", re.compile(path), method, times, body_bytes=body_bytes))

    def deny(self, path: str) -> Rule:
        return self.fail(path, "AccessDenied")

    def missing(self, path: str) -> Rule:
        return self.fail(path, "NoSuchKey")

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._log.clear()

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _take_rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    return rule
        return None

    # --- what was seen ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._log)

    def count(self, path: str, method: str | None = None) -> int:
        """Requests whose path matches the regex ``path`` (and ``method``, if given)."""
        pattern = re.compile(path)
        return sum(1 for r in self.requests if pattern.search(r.path) and (method is None or r.method == method))

    def _record(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        pass

    Handler.proxy = proxy
    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    proxy: FaultProxy

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's signature
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _handle(self) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        body = self._read_body()
        rule = self.proxy._take_rule(self.command, path)
        fault = None if rule is None else (f"fail:{rule.code}" if rule.kind == "fail" else rule.kind)
        self.proxy._record(Request(self.command, path, split.query, fault))
        try:
            if rule is not None and rule.kind == "fail":
                return self._send_error(rule.code, path)
            if rule is not None and rule.body_bytes is None:
                if rule.kind == "drop":
                    return self._abort()
                if self.proxy._stopping.wait(rule.seconds):
                    return self._abort()
            status, reason, headers, payload = self._forward(body)
            self._send(status, reason, headers, payload, rule)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up on this response (a read timeout)

    def _read_body(self) -> bytes:
        """The request body as it came on the wire, chunked framing included."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the blank line
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in ("connection", "keep-alive", "proxy-connection"):
                    conn.putheader(name, value)
            conn.endheaders(body or None)
            resp = conn.getresponse()
            payload = resp.read()
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            return resp.status, resp.reason, headers, payload
        finally:
            conn.close()

    def _send(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes, rule: Rule | None) -> None:
        self.send_response_only(status, reason)
        has_length = False
        for name, value in headers:
            has_length |= name.lower() == "content-length"
            self.send_header(name, value)
        if not has_length:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command == "HEAD":
            self.wfile.flush()
            return
        if rule is not None and rule.body_bytes is not None:
            cut = min(rule.body_bytes, len(payload))
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            if rule.kind == "drop":
                return self._abort()
            if self.proxy._stopping.wait(rule.seconds):
                return self._abort()
            payload = payload[cut:]
        self.wfile.write(payload)
        self.wfile.flush()

    def _send_error(self, code: str, path: str) -> None:
        status, message = ERRORS[code]
        request_id = uuid.uuid4().hex[:16].upper()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{path}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        if self.command == "HEAD":  # S3 answers HEAD errors with headers only
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        self.wfile.flush()

    def _abort(self) -> None:
        """Close the connection at once, as a crashed server or a cut network would."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
