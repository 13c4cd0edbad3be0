"""A minimal NBD client (fixed newstyle handshake) for writing into qcow2 images.

qemu-nbd serves the image on a unix socket; we write and read 4 KiB chunks through it,
so QEMU's own qcow2 code does the allocation. Protocol: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md
"""

import os
import socket
import struct
import subprocess
import time

from cloudlet_compute.errors import HypervisorError

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = b"IHAVEOPT"
FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
OPT_EXPORT_NAME = 1
REQUEST = struct.Struct(">IHHQQI")
REQUEST_MAGIC = 0x25609513
REPLY = struct.Struct(">IIQ")
REPLY_MAGIC = 0x67446698
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3


class NBDClient:
    """A connection to one NBD export (by name, default the server's default) on a unix
    socket."""

    def __init__(self, path, export=""):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise HypervisorError("cannot connect to qemu-nbd: %s" % exc.strerror) from None
        self._handle = 0
        self.size = self._handshake(export.encode())

    def _recv(self, length):
        buf = bytearray()
        while len(buf) < length:
            piece = self._sock.recv(length - len(buf))
            if not piece:
                raise HypervisorError("NBD server closed the connection")
            buf += piece
        return bytes(buf)

    def _handshake(self, export):
        if self._recv(16) != NBDMAGIC + IHAVEOPT:
            raise HypervisorError("NBD server does not speak the newstyle protocol")
        (flags,) = struct.unpack(">H", self._recv(2))
        if not flags & FLAG_FIXED_NEWSTYLE:
            raise HypervisorError("NBD server lacks fixed newstyle negotiation")
        client_flags = FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES)
        self._sock.sendall(struct.pack(">I", client_flags))
        self._sock.sendall(IHAVEOPT + struct.pack(">II", OPT_EXPORT_NAME, len(export)) + export)
        size, _tflags = struct.unpack(">QH", self._recv(10))
        if not client_flags & FLAG_NO_ZEROES:
            self._recv(124)
        return size

    def _command(self, cmd, offset, length, payload=b""):
        self._handle += 1
        self._sock.sendall(REQUEST.pack(REQUEST_MAGIC, 0, cmd, self._handle, offset, length)
                           + payload)
        magic, error, handle = REPLY.unpack(self._recv(REPLY.size))
        if magic != REPLY_MAGIC or handle != self._handle:
            raise HypervisorError("NBD reply out of sync")
        if error:
            raise HypervisorError("NBD command %d at offset %d failed: %s"
                                  % (cmd, offset, os.strerror(error)))

    def write(self, offset, data):
        """Write ``data`` at ``offset``."""
        self._command(CMD_WRITE, offset, len(data), bytes(data))

    def read(self, offset, length):
        """Return ``length`` bytes at ``offset``."""
        self._command(CMD_READ, offset, length)
        return self._recv(length)

    def flush(self):
        """Make written data durable in the image."""
        self._command(CMD_FLUSH, 0, 0)

    def close(self):
        """Disconnect cleanly."""
        try:
            self._sock.sendall(REQUEST.pack(REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        self._sock.close()


class NBDServer:
    """A ``qemu-nbd`` process serving one image on a unix socket; a context manager.

    The server gets SIGTERM when the thread that started it dies (``setpriv --pdeathsig``),
    so a killed synthesis or handoff receiver leaves no qemu-nbd behind.
    """

    def __init__(self, image, fmt, socket_path, read_only=False):
        self.socket_path = socket_path
        args = ["setpriv", "--pdeathsig", "TERM", "--",
                "qemu-nbd", "--format", fmt, "--socket", socket_path, "--cache", "writeback",
                "--persistent", "--shared", "4"]
        if read_only:
            args += ["--read-only", "--force-share"]
        self._proc = subprocess.Popen(args + [image], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        # Ready once it accepts: qemu-nbd binds the socket (the file appears) before it
        # listens, and a connect in between is refused (seen under load).
        deadline = time.monotonic() + 10
        while not self._accepts():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._proc.stderr.read().decode(errors="replace").strip()
                self.stop()
                raise HypervisorError("qemu-nbd could not serve %s: %s" % (image, err or "timeout"))
            time.sleep(0.005)

    def _accepts(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError):
                return False
        return True

    def connect(self):
        """Return a new ``NBDClient`` to this server."""
        return NBDClient(self.socket_path)

    def stop(self):
        """Stop the server and remove its socket."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stderr.close()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
