"""The disk's final handoff round from a QEMU dirty bitmap: only chunks written since the
first round are read.

``track`` briefly pauses the guest (QEMU drains and flushes its disk, so the qcow2 file then
holds every earlier write, metadata included) and adds a bitmap of 4 KiB granularity on the
disk's block node; the first round reads the file while every later write is marked. Once
QEMU holds the guest stopped, ``DirtyTracker.dirty`` exports the node over NBD with the
bitmap (a unix socket of ours, its listening fd handed to QEMU) and reads the marked ranges
through QEMU itself. ``close`` removes export, server and bitmap on every path.
"""

import logging
import os
import shutil
import socket
import tempfile

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
        self.exported = self.serving = False
        self.chunks_read = 0

    def _qmp(self, command, **arguments):
        return capture.qmp(self.dom, command, arguments)

    def dirty(self, workdir):
        """Yield ``(chunk index, bytes)`` of every chunk the bitmap marks, in order; the
        guest must be stopped. A private socket directory in ``workdir`` lives meanwhile."""
        self._qmp("block-dirty-bitmap-disable", node=self.node, name=NAME)  # for a read-only export
        sock_dir = tempfile.mkdtemp(prefix="nbd-", dir=workdir)
        path = os.path.join(sock_dir, "s")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
                listening.bind(path)
                listening.listen(4)
                capture.qmp(self.dom, "getfd", {"fdname": NAME}, files=[listening.fileno()])
            self._qmp("nbd-server-start", addr={"type": "fd", "data": {"str": NAME}})
            self.serving = True
            self._qmp("block-export-add", type="nbd", id=NAME, name=NAME, writable=False,
                      bitmaps=[NAME], **{"node-name": self.node})
            self.exported = True
            extents = qemuimg.dirty_extents(path, NAME, NAME)
            client = nbd.NBDClient(path, NAME)
            try:
                for start, length in extents:
                    for at in range(start, start + length, PIECE):
                        data = client.read(at, min(PIECE, start + length - at))
                        for pos in range(0, len(data), CHUNK_SIZE):
                            self.chunks_read += 1
                            yield (at + pos) // CHUNK_SIZE, data[pos:pos + CHUNK_SIZE]
            finally:
                client.close()
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)

    def close(self):
        """Remove the export, the NBD server and the bitmap (best effort: each is logged)."""
        steps = [("block-export-del", {"id": NAME})] if self.exported else []
        steps += [("nbd-server-stop", {})] if self.serving else []
        steps += [("block-dirty-bitmap-remove", {"node": self.node, "name": NAME})]
        for command, arguments in steps:
            try:
                capture.qmp(self.dom, command, arguments)
            except HypervisorError as exc:
                LOG.warning("handoff cleanup: %s", exc)
        self.exported = self.serving = False


def _no_bitmap(dom, why):
    LOG.info("no dirty bitmap on %s's disk, its final pass rescans: %s", dom.name(), why)


def track(dom, disk_path):
    """Start tracking writes to ``dom``'s disk (file ``disk_path``); return the
    ``DirtyTracker``, or None (why is logged) when QEMU cannot, for a full rescan instead.
    The guest pauses for QEMU's flush and runs again (or ``HypervisorError``)."""
    try:
        node = _node_of(dom, disk_path)
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
    return DirtyTracker(dom, node)
