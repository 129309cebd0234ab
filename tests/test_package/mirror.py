"""A mirror of the authors' repository tree on 127.0.0.1, honest or hostile, for the tests of released weights.

Each served path has a body and a way of serving it (``how``):

* ``whole``: the body with its Content-Length;
* ``short``: a Content-Length larger than the body, then the connection closed;
* ``chunked-cut``: chunked transfer closed mid-body;
* ``stall``: the headers (with the Content-Length), then nothing until the server stops;
* ``drip``: the headers, then :data:`DRIP_BYTES` bytes every :data:`DRIP_PAUSE_S` seconds;
* ``huge``: a Content-Length of 3 GB, then the body repeated for as long as the client reads;
* ``endless``: no Content-Length, the body repeated for as long as the client reads;
* ``fail-once``: HTTP 503 the first time, then ``whole``.

Every handler stops when the server stops (:meth:`Mirror.stop`), so no test waits on a thread.
"""
from __future__ import annotations

import http.server
import threading
from typing import Dict, List, Tuple

from asid_arch.released import RELEASED

DRIP_BYTES = 100
DRIP_PAUSE_S = 0.25
HUGE_LENGTH = 3 * 10**9


class Mirror:
    """``serve(name, body, how)``; ``url`` is what ``ASID_WEIGHTS_BASE_URL`` takes; ``requests`` the paths asked."""

    def __init__(self) -> None:
        self.files: Dict[str, Tuple[bytes, str]] = {}
        self.requests: List[str] = []
        self.sent: Dict[str, int] = {}  # bytes of body sent per path (the last request)
        self.stopping = threading.Event()
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                mirror.requests.append(self.path)
                key = self.path.lstrip('/')
                body, how = mirror.files.get(key, (None, None))
                if body is None:
                    self.send_error(404)
                    return
                if how == 'fail-once' and mirror.requests.count(self.path) == 1:
                    self.send_error(503)
                    return
                try:
                    mirror.sent[key] = 0
                    self.respond(key, body, how)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def body(self, key: str, data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()
                mirror.sent[key] += len(data)

            def respond(self, key: str, body: bytes, how: str) -> None:
                if how == 'trickle-headers':  # a status line, then a header a byte at a time: never a whole answer
                    self.wfile.write(b'HTTP/1.1 200 OK\r\n')
                    while not mirror.stopping.wait(DRIP_PAUSE_S):
                        self.wfile.write(b'X')
                        self.wfile.flush()
                    return
                self.send_response(200)
                if how == 'chunked-cut':
                    self.send_header('Transfer-Encoding', 'chunked')
                    self.end_headers()
                    self.body(key, f'{len(body):x}\r\n'.encode() + body[:len(body) // 2])
                    return
                length = {'huge': HUGE_LENGTH, 'endless': None}.get(how, len(body))
                if length is not None:
                    self.send_header('Content-Length', str(length))
                self.end_headers()
                self.wfile.flush()
                if how in ('whole', 'fail-once', 'short'):
                    self.body(key, body if how != 'short' else body[:len(body) // 2])
                elif how == 'stall':
                    mirror.stopping.wait()
                elif how == 'drip':
                    for start in range(0, len(body), DRIP_BYTES):
                        if mirror.stopping.wait(DRIP_PAUSE_S):
                            return
                        self.body(key, body[start:start + DRIP_BYTES])
                elif how in ('huge', 'endless'):
                    while not mirror.stopping.is_set():
                        self.body(key, body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}/mirror'

    def key(self, name: str) -> str:
        return f'mirror/{RELEASED[name].path}'

    def serve(self, name: str, body: bytes, how: str = 'whole') -> None:
        self.files[self.key(name)] = (body, how)

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
