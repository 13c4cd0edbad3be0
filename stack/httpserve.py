"""A small HTTP file server with Range support, for tests and benchmarks.

Python's ``http.server`` ignores ``Range``; overlays are read by range. Faults can be
injected: ``no_ranges`` (answer 200 with the whole body), ``cut_after`` (close the
connection after that many body bytes of a response: of every one, or of the first ``cuts``
that are longer), ``hold_after`` (after that many body bytes of a longer response, set
``held`` and wait for ``release``), ``rate`` (send at most that many body bytes a second, in
4 KiB pieces: a server that trickles). ``sent`` counts the body bytes served.
"""

import http.server
import os
import re
import threading
import time

RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head):
        server = self.server
        path = os.path.join(server.root, self.path.lstrip("/").split("?")[0])
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end, status = 0, size - 1, 200
        match = RANGE.match(self.headers.get("Range", ""))
        if match and not server.no_ranges:
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            else:
                start, end = max(0, size - int(last)), size - 1
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "none" if server.no_ranges else "bytes")
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        if head:
            return
        server.requests.append((self.command, self.headers.get("Range")))
        limit = length
        if server.cut_after is not None and server.cut_after < length and server.cuts != 0:
            limit = server.cut_after
            server.cuts = server.cuts - 1 if server.cuts else server.cuts
        hold = server.hold_after if server.hold_after is not None else length
        with open(path, "rb") as f:
            f.seek(start)
            sent = 0
            while sent < limit:
                if sent >= hold:
                    self.wfile.flush()
                    server.held.set()
                    server.release.wait()
                    hold = length
                piece = f.read(min(server.piece, limit - sent, max(hold - sent, 1)))
                self.wfile.write(piece)
                if server.rate:
                    self.wfile.flush()
                    time.sleep(len(piece) / server.rate)
                sent += len(piece)
                server.sent += len(piece)
        if sent < length:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)


class FileServer(http.server.ThreadingHTTPServer):
    """Serves ``root`` on 127.0.0.1 (ephemeral port) in a thread; a context manager."""

    daemon_threads = True

    def __init__(self, root, no_ranges=False, cut_after=None, cuts=None, hold_after=None,
                 rate=None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.rate, self.piece = rate, 4096 if rate else 1 << 16
        self.root, self.no_ranges, self.cut_after, self.cuts = root, no_ranges, cut_after, cuts
        self.hold_after, self.held, self.release = hold_after, threading.Event(), threading.Event()
        self.requests, self.sent = [], 0
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def url(self, name):
        """The URL of file ``name`` under ``root``."""
        return "http://127.0.0.1:%d/%s" % (self.server_address[1], name)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
