"""Capture stage: the memory image and disk of a running domain, which keeps running.

Memory is taken by a live migration of the domain into a file of ours: the guest runs
while QEMU pre-copies its RAM (re-sending pages it dirties) and stops only for the last
round. The stream reaches us through a socket pair whose one end is handed to QEMU
(``getfd``), so no socket file is ever exposed. While QEMU holds the guest stopped, the
disk file is copied; then the guest continues. The stream is rewritten with each page
once (``canonical.rewrite``: ``migstream.canonical`` file to file, in bounded memory)
behind a libvirt header carrying the domain's migratable XML, which makes it an ordinary
save image. Whatever fails, a guest we stopped is resumed: a capture never loses a VM.

A domain that cannot be captured (``source``: several disks, a disk that is not a raw or
qcow2 file, hugepages, host devices, ...) is refused before anything is touched. A qcow2's
backing chain stays where it is: the copy of the top layer is pointed at it by absolute path.

libvirt marks a domain whose monitor we used as tainted ("custom-monitor"); stock
libvirt has no API that migrates live into a file.
"""

import contextlib
import errno
import json
import logging
import os
import socket
import time

import libvirt
import libvirt_qemu

from cloudlet_compute.errors import ConflictError, HypervisorError
from cloudlet_compute.format import saveimage
from cloudlet_compute.format.records import CHUNK_SIZE
from cloudlet_compute.host import domains, domxml, qemuimg
from cloudlet_compute.write import canonical

LOG = logging.getLogger(__name__)
FD_NAME = "cloudlet-capture"
BANDWIDTH = 1 << 40           # bytes/s: do not throttle a local capture
POLL = 0.02
TERMINAL = ("completed", "failed", "cancelled")


class Capture:
    """What ``capture`` took: memory image, disk copy (same format as the domain's disk),
    the domain's XML and the guest's downtime in seconds."""

    def __init__(self, memory_path, disk_path, disk_format, xml, downtime):
        self.memory_path, self.disk_path, self.disk_format = memory_path, disk_path, disk_format
        self.xml, self.downtime = xml, downtime


class Source:
    """A domain that ``source`` found capturable: its live XML, its disk file and format,
    and ``backing``, ``(absolute path, format)`` of a qcow2's backing file or None."""

    def __init__(self, dom, xml, disk_path, disk_format, backing):
        self.dom, self.xml = dom, xml
        self.disk_path, self.disk_format, self.backing = disk_path, disk_format, backing


def probe_disk(disk_path, disk_format):
    """Read the headers of a source's disk and its backing chain (the guest may run);
    return ``(what makes it no source, or None; Source.backing)``."""
    try:
        chain = qemuimg.backing_chain(disk_path, disk_format)
    except HypervisorError as exc:
        LOG.debug("qemu-img info of %s: %s", disk_path, exc)
        return "qemu-img cannot read its disk", None
    if chain[0]["virtual-size"] % CHUNK_SIZE:
        return ("its disk is %d bytes, not a whole number of 4 KiB chunks"
                % chain[0]["virtual-size"]), None
    for layer in chain:
        if not os.path.isfile(layer["filename"]):
            return "its disk's backing chain holds something that is not a file", None
        if layer.get("format-specific", {}).get("data", {}).get("data-file"):
            return "its disk keeps its data in a separate file (qcow2 data-file)", None
    return None, (chain[1]["filename"], chain[1]["format"]) if len(chain) > 1 else None


def source(conn, name):
    """Return the :class:`Source` of running domain ``name``; refuse with one line
    (``ConflictError``), touching nothing, a domain that cannot be captured."""
    dom = domains.lookup(conn, name)
    xml = dom.XMLDesc(0)
    problem = domxml.source_problem(xml)
    if problem:
        raise ConflictError(problem)
    if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
        raise ConflictError("domain %s is not running" % name)
    disk_path, disk_format = domxml.file_disk(xml)
    problem, backing = probe_disk(disk_path, disk_format)
    if problem:
        raise ConflictError("domain %s cannot be captured: %s" % (name, problem))
    return Source(dom, xml, disk_path, disk_format, backing)


def qmp(dom, command, arguments=None, files=None):
    """Run QMP ``command`` on ``dom``'s QEMU; return its answer, raise QEMU's refusal."""
    cmd = json.dumps({"execute": command, "arguments": arguments or {}})
    try:
        if files:
            reply, _ = libvirt_qemu.qemuMonitorCommandWithFiles(dom, cmd, files, 0)
        else:
            reply = libvirt_qemu.qemuMonitorCommand(dom, cmd, 0)
    except libvirt.libvirtError as exc:
        raise HypervisorError("QEMU %s on %s failed: %s"
                              % (command, dom.name(), exc.get_error_message())) from None
    reply = json.loads(reply)
    if "error" in reply:
        raise HypervisorError("QEMU %s on %s failed: %s"
                              % (command, dom.name(), reply["error"].get("desc", "?")))
    return reply.get("return", {})


@contextlib.contextmanager
def live_migration(dom):
    """Start a live migration of ``dom``'s memory into a socket of ours; yield our end.

    The consumer reads the stream to its end (QEMU closes its end when done) and then asks
    ``migration_outcome``. If the consumer stops early, the migration is cancelled, so the
    guest keeps running.
    """
    ours, theirs = socket.socketpair()
    old = qmp(dom, "query-migrate-parameters").get("max-bandwidth")
    try:
        qmp(dom, "getfd", {"fdname": FD_NAME}, files=[theirs.fileno()])
        theirs.close()
        qmp(dom, "migrate-set-parameters", {"max-bandwidth": BANDWIDTH})
        qmp(dom, "migrate", {"uri": "fd:" + FD_NAME})
        yield ours
    except BaseException:
        with contextlib.suppress(HypervisorError):
            if qmp(dom, "query-migrate").get("status") not in TERMINAL:
                qmp(dom, "migrate_cancel")
        raise
    finally:
        theirs.close()
        ours.close()
        if old is not None:
            with contextlib.suppress(HypervisorError):
                qmp(dom, "migrate-set-parameters", {"max-bandwidth": old})


def migration_outcome(dom, wait=60.0):
    """Wait for the migration of ``dom`` to end; return QEMU's ``query-migrate`` answer.

    Completed: the guest is left stopped by QEMU. Otherwise ``HypervisorError``; the guest
    runs as before.
    """
    deadline = time.monotonic() + wait
    while True:
        info = qmp(dom, "query-migrate")
        if info.get("status") in TERMINAL or time.monotonic() > deadline:
            break
        time.sleep(POLL)
    if info.get("status") != "completed":
        raise HypervisorError("live migration of %s's memory failed: %s"
                              % (dom.name(), info.get("error-desc") or info.get("status")))
    return info


def _receive(sock, path):
    with open(path, "wb") as out:
        while True:
            piece = sock.recv(1 << 20)
            if not piece:
                break
            out.write(piece)


def copy_sparse(src, dst):
    """Copy file ``src`` to ``dst`` keeping its holes (SEEK_DATA/SEEK_HOLE): a raw disk is
    mostly holes, and the guest stays stopped while its disk is copied (a 2 GiB raw disk with
    470 MiB of data: 0.2 s instead of 7.8 s for a full copy)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fd_in, fd_out = fin.fileno(), fout.fileno()
        size = os.fstat(fd_in).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd_in, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:        # ENXIO: only a hole after pos
                    raise
                break
            end = os.lseek(fd_in, start, os.SEEK_HOLE)
            _copy_range(fd_in, fd_out, start, end - start)
            pos = end
        fout.truncate(size)


def _copy_range(fd_in, fd_out, offset, length):
    while length > 0:
        try:
            done = os.copy_file_range(fd_in, fd_out, min(length, 1 << 30), offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            done = os.pwrite(fd_out, os.pread(fd_in, min(length, 1 << 20), offset), offset)
        if done <= 0:
            raise OSError(errno.EIO, "disk copy ended early at offset %d" % offset)
        offset += done
        length -= done


def resume_guest(dom):
    """Let a guest that a capture or handoff stopped run again (no-op if it runs)."""
    try:
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
    except libvirt.libvirtError as exc:
        raise HypervisorError("could not resume %s after stopping it: %s"
                              % (dom.name(), exc.get_error_message())) from None


def capture(conn, name, workdir):
    """Capture running domain ``name`` into ``workdir`` (refused first: see ``source``)."""
    src = source(conn, name)
    dom = src.dom
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE)
    stream_path = os.path.join(workdir, "stream.raw")
    memory_path = os.path.join(workdir, "memory.img")
    disk_copy = os.path.join(workdir, "captured-disk." + src.disk_format)
    try:
        with live_migration(dom) as ours:
            _receive(ours, stream_path)
        qemu_downtime = migration_outcome(dom).get("downtime", 0)
        stopped = time.monotonic()
        copy_sparse(src.disk_path, disk_copy)
    finally:
        resume_guest(dom)
    downtime = time.monotonic() - stopped + qemu_downtime / 1000.0
    if src.backing:     # the top layer may name its backing file relative to its own directory
        qemuimg.rebase_unsafe(disk_copy, *src.backing)
    with open(memory_path, "wb") as out:
        out.write(saveimage.SaveHeader(xml, "").encode())
        canonical.rewrite(stream_path, out)
    os.unlink(stream_path)
    LOG.info("captured %s (guest stopped %.3f s)", name, downtime)
    return Capture(memory_path, disk_copy, src.disk_format, xml, downtime)
