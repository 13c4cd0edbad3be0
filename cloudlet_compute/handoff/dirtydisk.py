"""The disk's final handoff round from a QEMU dirty bitmap: only chunks written since the
first round are read.

``track`` briefly pauses the guest (QEMU drains and flushes its disk, so the qcow2 file then
holds every earlier write, metadata included) and adds a bitmap of 4 KiB granularity on the
disk's block node, and starts QEMU's NBD server (a unix socket of ours, its listening fd
handed to QEMU); the first round reads the file while every later write is marked. Once
QEMU holds the guest stopped, ``DirtyTracker.dirty`` exports the node with the bitmap and
reads the marked ranges through QEMU itself: two QMP commands and a ``qemu-img map`` in the
downtime. ``close`` removes export, server and bitmap on every path.
"""

import logging
import os
import shutil
import socket
import tempfile
import time

import libvirt

from cloudlet_compute.errors import HypervisorError
from cloudlet_compute.format.records import CHUNK_SIZE
from cloudlet_compute.host import nbd, qemuimg
from cloudlet_compute.write import capture

LOG = logging.getLogger(__name__)
NAME = "cloudlet-handoff"       # bitmap, export and fd name in QEMU
PIECE = 1 << 20


def _node_of(dom, disk_path):
    for device in capture.qmp(dom, "query-block"):
        inserted = device.get("inserted") or {}
        if inserted.get("file") == disk_path and inserted.get("node-name"):
            return inserted["node-name"]
    raise HypervisorError("QEMU shows no block node for the disk")


class DirtyTracker:
    """A dirty bitmap on the block node ``node`` of ``dom``'s disk."""

    def __init__(self, dom, node):
        self.dom, self.node = dom, node
        self.undo = [("block-dirty-bitmap-remove", {"node": node, "name": NAME})]
        self.chunks_read = 0
        self.sock_dir = self.path = None
        self.export_seconds = 0.0   # from the guest's stop until the dirty ranges are known
        self.pause_seconds = 0.0    # the guest's pause while the bitmap was added

    def _qmp(self, command, undo=None, **arguments):
        """Run ``command``; once it worked, ``undo`` (a command and its arguments) is due."""
        capture.qmp(self.dom, command, arguments)
        if undo:
            self.undo.append(undo)

    def serve(self):
        """Start QEMU's NBD server (no export yet) on a unix socket in a private directory;
        QEMU gets its listening fd, not its path."""
        self.sock_dir = tempfile.mkdtemp(prefix="cloudlet-nbd-")
        self.path = os.path.join(self.sock_dir, "s")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
            listening.bind(self.path)
            listening.listen(4)
            capture.qmp(self.dom, "getfd", {"fdname": NAME}, files=[listening.fileno()])
        self.undo.append(("closefd", {"fdname": NAME}))
        self._qmp("nbd-server-start", addr={"type": "fd", "data": {"str": NAME}})
        self.undo[-1] = ("nbd-server-stop", {})    # the server took the fd

    def dirty(self):
        """Yield ``(chunk index, bytes)`` of every chunk the bitmap marks, in order; the
        guest must be stopped."""
        t0 = time.monotonic()
        self._qmp("block-dirty-bitmap-disable", node=self.node, name=NAME)  # read-only export
        self._qmp("block-export-add", ("block-export-del", {"id": NAME}), type="nbd", id=NAME,
                  name=NAME, writable=False, bitmaps=[NAME], **{"node-name": self.node})
        extents = qemuimg.dirty_extents(self.path, NAME, NAME)
        self.export_seconds = time.monotonic() - t0
        client = nbd.NBDClient(self.path, NAME)
        try:
            for start, length in extents:
                for at in range(start, start + length, PIECE):
                    data = client.read(at, min(PIECE, start + length - at))
                    for pos in range(0, len(data), CHUNK_SIZE):
                        self.chunks_read += 1
                        yield (at + pos) // CHUNK_SIZE, data[pos:pos + CHUNK_SIZE]
        finally:
            client.close()

    def close(self):
        """Remove export, NBD server, its socket and the bitmap, whichever exist (best
        effort, each logged); a second call does nothing."""
        if self.sock_dir:
            shutil.rmtree(self.sock_dir, ignore_errors=True)
            self.sock_dir = None
        while self.undo:
            command, arguments = self.undo.pop()
            try:
                capture.qmp(self.dom, command, arguments)
            except HypervisorError as exc:
                LOG.warning("handoff cleanup: %s", exc)


def _no_bitmap(dom, why):
    LOG.info("no dirty bitmap on %s's disk, its final pass rescans: %s", dom.name(), why)


def track(dom, disk_path):
    """Start tracking writes to ``dom``'s disk (file ``disk_path``); return the
    ``DirtyTracker``, or None (why is logged) when QEMU cannot, for a full rescan instead.
    The guest pauses for QEMU's flush and runs again (or ``HypervisorError``)."""
    try:
        node = _node_of(dom, disk_path)
        paused = time.monotonic()
        dom.suspend()
    except (HypervisorError, libvirt.libvirtError) as exc:
        return _no_bitmap(dom, exc)
    try:
        capture.qmp(dom, "block-dirty-bitmap-add",
                    {"node": node, "name": NAME, "granularity": CHUNK_SIZE})
    except HypervisorError as exc:
        return _no_bitmap(dom, exc)
    finally:
        capture.resume_guest(dom)
    tracker = DirtyTracker(dom, node)
    tracker.pause_seconds = time.monotonic() - paused
    try:
        tracker.serve()
    except (HypervisorError, OSError) as exc:
        tracker.close()
        return _no_bitmap(dom, exc)
    return tracker
