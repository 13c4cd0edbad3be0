"""Fetch stage: random and streaming reads of an overlay from a path or an http(s) URL.

Over HTTP the reader asks for byte ranges (``Range: bytes=...``): the tail of the package
first (meta and zip directory), then one streamed range over all blobs. A server that
ignores ranges gets one plain GET, streamed into a private temporary file, at most
``max_bytes`` of it. With a ``FetchPolicy`` (services fetching on a user's behalf) every
connection's peer is checked before a byte is sent, redirects are refused and the whole
download (requests, resumes, waits) ends by the policy's ``time_limit``.
"""

import logging
import os
import tempfile
import time
import urllib.parse

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

from cloudlet_compute.errors import FetchError, NotFoundError

LOG = logging.getLogger(__name__)
STREAM_PIECE = 1 << 20
TIMEOUT = (10, 60)   # connect, read (seconds)
# A ranged stream that breaks is asked again from the byte where it broke, this many
# times, after RESUME_DELAY seconds, doubled each time (0.5 + 1 + 2 s at most).
RESUMES = 3
RESUME_DELAY = 0.5
NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


class FileSource:
    """A local file read by offset."""

    def __init__(self, path, label=None):
        self.location = label or path
        try:
            self._file = open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError("overlay file %s does not exist" % self.location) from None
        except OSError as exc:
            raise FetchError("cannot open %s: %s" % (self.location, exc.strerror)) from exc
        self.size = os.fstat(self._file.fileno()).st_size

    def read(self, start, length):
        """Return exactly ``length`` bytes at ``start``."""
        data = os.pread(self._file.fileno(), length, start)
        if len(data) != length:
            raise FetchError("%s: expected %d bytes at offset %d, got %d"
                             % (self.location, length, start, len(data)))
        return data

    def stream(self, start, length):
        """Yield the bytes of ``[start, start+length)`` in pieces."""
        pos, end = start, start + length
        while pos < end:
            piece = self.read(pos, min(STREAM_PIECE, end - pos))
            pos += len(piece)
            yield piece

    def close(self):
        self._file.close()


class HttpSource:
    """An http(s) URL read with Range requests."""

    def __init__(self, url, tail_hint, policy, max_bytes, limit):
        self.location = url
        self._session = requests.Session()
        self._policy, self._limit = policy, limit
        if policy is not None:
            for scheme in ("http://", "https://"):
                self._session.mount(scheme, _PolicyAdapter(policy))
        self.size = None
        self.tail = self._get_tail(tail_hint, max_bytes)

    def _request(self, headers, stream=False):
        self._limit.check()
        try:
            resp = self._session.get(self.location, headers=headers, stream=stream,
                                     timeout=self._limit.timeouts(),
                                     allow_redirects=self._policy is None)
        except requests.RequestException as exc:
            self._limit.check()
            raise _Unreachable("cannot fetch %s: %s" % (self.location, _reason(exc))) from exc
        if resp.is_redirect:
            resp.close()
            raise FetchError("overlay URL %s answered with a redirect (HTTP %d); redirects are "
                             "not followed" % (self.location, resp.status_code))
        if resp.status_code == 404:
            raise NotFoundError("overlay URL %s: HTTP 404 Not Found" % self.location)
        if resp.status_code not in (200, 206):
            raise FetchError("overlay URL %s: HTTP %d %s"
                             % (self.location, resp.status_code, resp.reason))
        return resp

    def _get_tail(self, length, max_bytes):
        resp = self._request({"Range": "bytes=-%d" % length}, stream=True)
        if resp.status_code == 200:
            raise _NoRanges(resp)
        total = _content_range_total(resp, self.location)
        if max_bytes is not None and total > max_bytes:
            resp.close()
            raise _too_big(self.location, max_bytes)
        self.size = total
        data = _read_body(resp, self.location, min(length, total), self._limit)
        return total - len(data), data

    def read(self, start, length):
        """Return exactly ``length`` bytes at ``start`` (from the cached tail if there)."""
        tail_start, tail = self.tail
        if start >= tail_start:
            piece = tail[start - tail_start:start - tail_start + length]
            if len(piece) == length:
                return piece
        return b"".join(self.stream(start, length))

    def stream(self, start, length):
        """Yield the bytes of ``[start, start+length)`` from a streamed Range request; a
        broken connection is resumed where it broke, at most ``RESUMES`` times."""
        pos, end = start, start + length
        for attempt in range(RESUMES + 1):
            try:
                for piece in self._stream_range(pos, end - pos):
                    pos += len(piece)
                    yield piece
                return
            except _Broken as exc:
                if attempt == RESUMES:
                    raise FetchError("%s; gave up after %d resumes" % (exc, RESUMES)) from exc
                LOG.info("%s; resuming at byte %d", exc, pos)
                self._limit.sleep(RESUME_DELAY * 2 ** attempt)

    def _stream_range(self, start, length):
        if length == 0:
            return
        try:
            resp = self._request({"Range": "bytes=%d-%d" % (start, start + length - 1)},
                                 stream=True)
        except _Unreachable as exc:
            raise _Broken(str(exc)) from exc
        if resp.status_code != 206:
            resp.close()
            raise FetchError("overlay URL %s stopped honouring Range requests" % self.location)
        got = 0
        try:
            for piece in _pieces(resp, self._limit):
                got += len(piece)
                if got > length:
                    raise FetchError("%s sent more than the %d bytes asked for"
                                     % (self.location, length))
                yield piece
        except NETWORK_ERRORS as exc:
            self._limit.check()
            raise _Broken("connection to %s closed after %d of %d bytes (%s)"
                          % (self.location, got, length, type(exc).__name__)) from exc
        finally:
            resp.close()
        if got != length:
            raise _Broken("connection to %s closed after %d of %d bytes"
                          % (self.location, got, length))

    def close(self):
        self._session.close()


def _checked_connection(base, policy):
    """``base`` (a urllib3 connection class) checking its peer before sending anything."""
    class PolicyConnection(base):
        def _new_conn(self):
            sock = super()._new_conn()
            try:
                policy.check_peer(self.host, sock.getpeername()[0])
            except BaseException:
                sock.close()
                raise
            return sock
    return PolicyConnection


class _PolicyAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose connections obey a ``FetchPolicy``."""

    def __init__(self, policy):
        self._policy = policy
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        pools = {}
        for scheme, pool in (("http", urllib3.connectionpool.HTTPConnectionPool),
                             ("https", urllib3.connectionpool.HTTPSConnectionPool)):
            pools[scheme] = type("Policy" + pool.__name__, (pool,), {
                "ConnectionCls": _checked_connection(pool.ConnectionCls, self._policy)})
        self.poolmanager.pool_classes_by_scheme = pools


def _too_big(url, max_bytes):
    return FetchError("overlay at %s is larger than the %d bytes an overlay of this base can "
                      "take" % (url, max_bytes))


class TimeLimit:
    """The end of the time one overlay's download may take (``seconds`` None: no end)."""

    def __init__(self, url, seconds):
        self._url, self._seconds = url, seconds
        self._end = time.monotonic() + seconds if seconds else None

    def check(self):
        """Raise FetchError once the time is up."""
        if self._end is not None and time.monotonic() >= self._end:
            raise FetchError("the download of %s did not end within %g s, this cloud's "
                             "overlay fetch time limit" % (self._url, self._seconds))

    def timeouts(self):
        """(connect, read) timeouts for a request: TIMEOUT, never past the end."""
        if self._end is None:
            return TIMEOUT
        left = max(self._end - time.monotonic(), 0.05)
        return min(TIMEOUT[0], left), min(TIMEOUT[1], left)

    def sleep(self, seconds):
        """Wait ``seconds``, or until the end and raise."""
        if self._end is not None:
            seconds = min(seconds, max(self._end - time.monotonic(), 0))
        time.sleep(seconds)
        self.check()


def _pieces(resp, limit):
    """The body of ``resp`` as it arrives (pieces of at most STREAM_PIECE bytes), checking
    ``limit`` before each read: a trickling server cannot stretch one piece past it."""
    while True:
        limit.check()
        piece = resp.raw.read1(STREAM_PIECE, decode_content=True)
        if not piece:
            return
        yield piece


class _Unreachable(FetchError):
    """A request got no response (connection refused, reset, timed out)."""


class _Broken(FetchError):
    """A ranged response ended before its last byte."""


class _NoRanges(Exception):
    """The server answered a Range request with the whole body."""

    def __init__(self, response):
        super().__init__("no Range support")
        self.response = response


def _reason(exc):
    text = str(exc.__context__ or exc) if isinstance(exc, requests.ConnectionError) else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _content_range_total(resp, url):
    value = resp.headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    total = rest.rpartition("/")[2]
    if unit != "bytes" or not total.isdigit():
        raise FetchError("%s: bad Content-Range header %r" % (url, value))
    return int(total)


def _read_body(resp, url, expected, limit):
    """The body of a streamed response, which must be ``expected`` bytes (no more is read)."""
    data = bytearray()
    try:
        for piece in _pieces(resp, limit):
            data += piece
            if len(data) > expected:
                raise FetchError("%s sent more than the %d bytes asked for" % (url, expected))
    except NETWORK_ERRORS as exc:
        limit.check()
        raise FetchError("connection to %s broke: %s" % (url, _reason(exc))) from exc
    finally:
        resp.close()
    if len(data) != expected:
        raise FetchError("connection to %s closed after %d of %d bytes" % (url, len(data), expected))
    return bytes(data)


def _download(resp, url, workdir, progress, max_bytes, limit):
    """Stream a full-body response (at most ``max_bytes``) into a temporary file in
    ``workdir``; return its path."""
    expected = resp.headers.get("Content-Length")
    expected = int(expected) if expected and expected.isdigit() else None
    if max_bytes is not None and expected is not None and expected > max_bytes:
        resp.close()
        raise _too_big(url, max_bytes)
    try:
        fd, path = tempfile.mkstemp(prefix=".overlay-", dir=workdir)
    except OSError as exc:
        resp.close()
        raise _unstorable(url, exc) from exc
    got = 0
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:   # a write error is raised here
            for piece in _pieces(resp, limit):
                try:
                    _write_all(out, piece)
                except OSError as exc:
                    raise _unstorable(url, exc) from exc
                got += len(piece)
                if max_bytes is not None and got > max_bytes:
                    raise _too_big(url, max_bytes)
                progress.update(len(piece))
        if expected is not None and got != expected:
            raise FetchError("connection to %s closed after %d of %d bytes" % (url, got, expected))
        return path
    except NETWORK_ERRORS as exc:
        os.unlink(path)
        limit.check()
        raise FetchError("connection to %s closed after %d bytes (%s)"
                         % (url, got, type(exc).__name__)) from exc
    except BaseException:
        os.unlink(path)
        raise
    finally:
        resp.close()


def _write_all(out, data):
    view = memoryview(data)
    while view:
        view = view[out.write(view):]


def _unstorable(url, exc):
    """The download of ``url`` cannot be stored here (``exc``: an OSError; its path is not
    said)."""
    return FetchError("cannot store the download of %s on this host: %s" % (url, exc.strerror))


def open_source(location, workdir, progress, tail_hint=64 << 10, policy=None,
                max_bytes=None):
    """Open ``location`` (a path, ``file://`` or ``http(s)://`` URL) for reading.

    Returns ``(source, temp_path)``; ``temp_path`` is a file the caller must delete
    (a full download from a server without Range support) or None. ``policy`` (a
    ``fetchpolicy.FetchPolicy``) vets http(s) URLs and their connections and bounds the
    download's time; ``max_bytes`` bounds what is read.
    """
    parsed = urllib.parse.urlsplit(location)
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            raise FetchError("overlay URL %r has no host" % location)
        if policy is not None:
            policy.check(parsed)
        limit = TimeLimit(location, policy.time_limit if policy is not None else None)
        try:
            return HttpSource(location, tail_hint, policy, max_bytes, limit), None
        except _NoRanges as no_ranges:
            LOG.info("%s ignores Range requests; downloading it whole", location)
            path = _download(no_ranges.response, location, workdir, progress, max_bytes, limit)
            return FileSource(path, label=location), path
    if parsed.scheme == "file":
        return FileSource(urllib.parse.unquote(parsed.path)), None
    if parsed.scheme and len(parsed.scheme) > 1:
        raise FetchError("overlay location %r: scheme %r is not supported (use a path, "
                         "file://, http:// or https://)" % (location, parsed.scheme))
    return FileSource(location), None
