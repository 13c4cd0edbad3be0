"""The VM handoff channel: mutual authentication, then encrypted frames (``doc/handoff.md``).

The source listens on an ephemeral TCP port for one handoff; the destination connects.
Both hold a 32-byte one-time secret that the source created for one destination server.
Handshake (no credential of the user ever crosses it)::

    S -> D   MAGIC (11 bytes)  nonce_s (32)
    D -> S   server uuid (36 ascii)  nonce_d (32)  HMAC(secret, "dest" | nonce_s | nonce_d | uuid)
    S -> D   HMAC(secret, "source" | nonce_s | nonce_d | uuid)

The source closes the connection unless the uuid is the destination server it created and
the MAC verifies; the destination does the same with the source's MAC. Each direction then
has its own AES-256-GCM key, ``HMAC(secret, "key-sd"|"key-ds" | nonce_s | nonce_d | uuid)``.

Frame: ``u8 type | u32 length | ciphertext`` where ciphertext = AES-GCM(key, nonce = 4 zero
bytes + u64 frame counter of that direction, plaintext, aad = type byte); ``length`` counts
the ciphertext with its 16-byte tag and is at most ``MAX_FRAME``. A replayed, reordered,
dropped or altered frame fails authentication. Integers are big-endian (network order).
"""

import hashlib
import hmac
import os
import secrets
import select
import socket
import struct
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloudlet_compute.errors import CloudletError, ConflictError, FetchError, FormatError

MAGIC = b"CLHANDOFF1\n"
SECRET_SIZE = 32
NONCE_SIZE = 32
UUID_SIZE = 36
MAC_SIZE = 32
TAG_SIZE = 16
MAX_FRAME = (64 << 20) + TAG_SIZE
FRAME_HEAD = struct.Struct(">BI")

# Source -> destination
HEADER, SETUP, RECORDS, TAIL, END = 1, 2, 3, 4, 5
# Destination -> source
RUNNING, FAILED = 16, 17
# Either way
ABORT = 32
NAMES = {HEADER: "header", SETUP: "setup", RECORDS: "records", TAIL: "tail", END: "end",
         RUNNING: "running", FAILED: "failed", ABORT: "abort"}


class PeerFailed(CloudletError):
    """The other side stopped the handoff and said why."""

    def __init__(self, kind, reason):
        self.kind = kind
        super().__init__(reason)


def new_secret():
    """A fresh one-time secret, and its text form for the destination server's metadata."""
    secret = secrets.token_bytes(SECRET_SIZE)
    return secret, secret.hex()


def parse_secret(text):
    """The secret from its text form; ``FormatError`` if it is not one."""
    try:
        secret = bytes.fromhex(text or "")
    except ValueError:
        secret = b""
    if len(secret) != SECRET_SIZE:
        raise FormatError("handoff secret is not %d hex-encoded bytes" % SECRET_SIZE)
    return secret


def ticket(url, server_uuid, secret_text):
    """One string carrying what a destination needs: ``tcp://HOST:PORT/UUID#SECRET``."""
    return "%s/%s#%s" % (url, server_uuid, secret_text)


def parse_ticket(text):
    """``(url, server uuid, secret)`` of a ticket; ``FormatError`` if it is not one."""
    rest, _, secret_text = (text or "").strip().partition("#")
    url, _, server_uuid = rest.rpartition("/")
    if len(server_uuid) != UUID_SIZE:
        raise FormatError("handoff ticket %r is not tcp://HOST:PORT/UUID#SECRET" % text)
    _split_url(url)
    return url, server_uuid, parse_secret(secret_text)


def _mac(secret, label, *parts):
    return hmac.new(secret, label + b"".join(parts), hashlib.sha256).digest()


class Channel:
    """An authenticated, encrypted, ordered frame channel over a connected socket."""

    def __init__(self, sock, send_key, recv_key, peer):
        self.sock, self.peer = sock, peer
        self._send, self._recv = AESGCM(send_key), AESGCM(recv_key)
        self._send_count = self._recv_count = 0
        self.bytes_sent = self.bytes_received = 0

    def send(self, kind, payload):
        """Send one frame of ``kind``."""
        nonce = bytes(4) + struct.pack(">Q", self._send_count)
        self._send_count += 1
        body = self._send.encrypt(nonce, bytes(payload), bytes([kind]))
        data = FRAME_HEAD.pack(kind, len(body)) + body
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise FetchError("handoff connection to %s lost while sending: %s"
                             % (self.peer, exc.strerror or exc)) from None
        self.bytes_sent += len(data)

    def receive(self):
        """Return ``(kind, plaintext)`` of the next frame."""
        kind, length = FRAME_HEAD.unpack(_recv_exact(self.sock, FRAME_HEAD.size, self.peer))
        if kind not in NAMES or not TAG_SIZE <= length <= MAX_FRAME:
            raise FormatError("handoff frame from %s has type %d and length %d: not a frame "
                              "of this protocol" % (self.peer, kind, length))
        body = _recv_exact(self.sock, length, self.peer)
        nonce = bytes(4) + struct.pack(">Q", self._recv_count)
        self._recv_count += 1
        try:
            plain = self._recv.decrypt(nonce, body, bytes([kind]))
        except InvalidTag:
            raise FormatError("handoff frame %d from %s fails authentication (altered, "
                              "replayed or out of order)" % (self._recv_count - 1, self.peer)
                              ) from None
        self.bytes_received += FRAME_HEAD.size + length
        return kind, plain

    def check_peer(self):
        """Raise if the peer has sent a frame meanwhile (a failure or abort it reports)."""
        if select.select([self.sock], [], [], 0)[0]:
            kind, payload = self.receive()
            raise PeerFailed(kind, payload.decode("utf-8", "replace"))

    def end_with(self, kind, reason, linger=5.0):
        """Tell the peer why we stop (best effort), let it read that, then close."""
        try:
            self.send(kind, str(reason).encode("utf-8", "replace")[:4096])
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(linger)
            while self.sock.recv(1 << 20):
                pass
        except (CloudletError, OSError):
            pass
        self.close()

    def close(self):
        """Close the connection."""
        try:
            self.sock.close()
        except OSError:
            pass


def _recv_exact(sock, length, peer, deadline=None):
    """Exactly ``length`` bytes from ``sock``. With ``deadline`` (``time.monotonic()``), the
    whole message must arrive by then, however the peer trickles it (handshakes)."""
    out = bytearray()
    while len(out) < length:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FetchError("handoff peer %s did not complete the handshake in time"
                                 % peer)
            sock.settimeout(left)
        try:
            piece = sock.recv(min(length - len(out), 1 << 20))
        except socket.timeout:
            if deadline is not None:
                raise FetchError("handoff peer %s did not complete the handshake in time"
                                 % peer) from None
            raise FetchError("handoff peer %s sent nothing for %.0f s"
                             % (peer, sock.gettimeout())) from None
        except OSError as exc:
            raise FetchError("handoff connection to %s lost: %s"
                             % (peer, exc.strerror or exc)) from None
        if not piece:
            raise FetchError("handoff connection to %s closed after %d of %d bytes of a "
                             "message" % (peer, len(out), length))
        out += piece
    return bytes(out)


def _keys(secret, nonce_s, nonce_d, uuid):
    return (_mac(secret, b"key-sd", nonce_s, nonce_d, uuid),
            _mac(secret, b"key-ds", nonce_s, nonce_d, uuid))


class Listener:
    """The source's side: one ephemeral port and a fresh one-time secret for one handoff."""

    def __init__(self, host, timeout=60.0):
        self.secret, self.secret_text = new_secret()
        self.timeout, self.server_uuid = timeout, None
        try:
            self.sock = socket.create_server((host, 0))
        except OSError as exc:
            raise ConflictError("cannot listen for the handoff on %s: %s"
                                % (host, exc.strerror or exc)) from None
        self.host, self.port = host, self.sock.getsockname()[1]

    @property
    def url(self):
        """Where the destination connects: ``tcp://HOST:PORT``."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "tcp://%s:%d" % (host, self.port)

    def accept(self, server_uuid, wait, check=None):
        """Wait up to ``wait`` seconds for destination server ``server_uuid``; return its
        ``Channel``. ``check``, if given, is called about every second while waiting and
        may raise to give up (say, when the destination server failed).

        Connections that fail authentication are closed and waiting goes on, so a
        stranger cannot take the slot; the listener closes after the first good one.
        """
        if len(server_uuid) != UUID_SIZE:
            raise ConflictError("destination server id %r is not a UUID" % server_uuid)
        self.server_uuid = server_uuid
        deadline = time.monotonic() + wait
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FetchError("the destination did not connect for the handoff within "
                                     "%.0f s" % wait)
                self.sock.settimeout(min(left, 1.0))
                try:
                    sock, addr = self.sock.accept()
                except socket.timeout:
                    if check:
                        check()
                    continue
                channel = self._authenticate(sock, "%s:%d" % addr[:2], deadline)
                if channel is not None:
                    return channel
        finally:
            self.close()

    def _authenticate(self, sock, peer, deadline=None):
        """The source's half of the handshake on a new connection; ``None`` if refused.
        The whole handshake must be done within ``min(timeout, 10)`` s (and ``deadline``),
        so a peer that stalls or trickles cannot hold the one slot."""
        limit = time.monotonic() + min(self.timeout, 10.0)
        deadline = limit if deadline is None else min(limit, deadline)
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            nonce_s = os.urandom(NONCE_SIZE)
            sock.sendall(MAGIC + nonce_s)
            reply = _recv_exact(sock, UUID_SIZE + NONCE_SIZE + MAC_SIZE, peer, deadline)
            uuid, nonce_d, mac = (reply[:UUID_SIZE], reply[UUID_SIZE:-MAC_SIZE],
                                  reply[-MAC_SIZE:])
            if uuid != self.server_uuid.encode() or not hmac.compare_digest(
                    mac, _mac(self.secret, b"dest", nonce_s, nonce_d, uuid)):
                raise FormatError("handoff peer %s failed authentication" % peer)
            sock.sendall(_mac(self.secret, b"source", nonce_s, nonce_d, uuid))
        except (FormatError, FetchError, OSError):
            sock.close()
            return None
        sock.settimeout(self.timeout)
        to_dest, to_source = _keys(self.secret, nonce_s, nonce_d, uuid)
        return Channel(sock, to_dest, to_source, peer)

    def close(self):
        """Stop listening."""
        self.sock.close()


def connect(url, server_uuid, secret, timeout=60.0):
    """The destination's side: connect to the source at ``url`` (``tcp://HOST:PORT``)."""
    host, port = _split_url(url)
    peer = "%s:%d" % (host, port)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise FetchError("cannot reach the handoff source %s: %s"
                         % (peer, exc.strerror or exc)) from None
    return _greet_source(sock, peer, server_uuid, secret, time.monotonic() + timeout)


def _greet_source(sock, peer, server_uuid, secret, deadline):
    """The destination's half of the handshake on ``sock``, done by ``deadline``; returns
    the ``Channel`` (the socket is closed on any failure)."""
    sock_timeout = sock.gettimeout()
    try:
        hello = _recv_exact(sock, len(MAGIC) + NONCE_SIZE, peer, deadline)
        if not hello.startswith(MAGIC):
            raise FormatError("%s does not speak the handoff protocol" % peer)
        nonce_s, nonce_d = hello[len(MAGIC):], os.urandom(NONCE_SIZE)
        uuid = server_uuid.encode()
        sock.sendall(uuid + nonce_d + _mac(secret, b"dest", nonce_s, nonce_d, uuid))
        try:
            mac = _recv_exact(sock, MAC_SIZE, peer, deadline)
        except FetchError:
            raise FetchError("the handoff source %s refused this destination (wrong secret "
                             "or server)" % peer) from None
        if not hmac.compare_digest(mac, _mac(secret, b"source", nonce_s, nonce_d, uuid)):
            raise FormatError("the handoff source %s failed authentication" % peer)
    except BaseException:
        sock.close()
        raise
    sock.settimeout(sock_timeout)
    to_dest, to_source = _keys(secret, nonce_s, nonce_d, uuid)
    return Channel(sock, to_source, to_dest, peer)


def _split_url(url):
    if not url.startswith("tcp://"):
        raise FormatError("handoff source URL %r is not tcp://HOST:PORT" % url)
    host, sep, port = url[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or \
            not 0 < int(port) < 65536:   # isdigit() alone lets "²" through to int()
        raise FormatError("handoff source URL %r is not tcp://HOST:PORT" % url)
    return host, int(port)
