"""Domains made from a base VM: where they live, and starting one from a memory image.

Each such domain has a directory (its ``Placement``) holding its qcow2 disk over the
cached base disk, its sockets and logs; it must be reachable by the QEMU user.
"""

import errno
import itertools
import logging
import mmap
import os
import shutil
import threading
import time

import libvirt

from cloudlet_compute.errors import ConflictError, HypervisorError
from cloudlet_compute.format import saveimage
from cloudlet_compute.host import domains, domxml, qemuimg, ramfile, ramhook

LOG = logging.getLogger(__name__)

NAME_MAX = 64


class Placement:
    """Where a domain made from a base VM lives: its name, UUID, directory and disk.

    The ``cloudlet`` CLI places domains in ``$CLOUDLET_HOME/instances/<name>/``
    (``in_home``); the nova driver places them in nova's instance directory, which nova
    creates and deletes (``owns_dir=False``). ``xml_hook``, if given, edits the final domain
    XML (the nova driver adds its own devices there).
    """

    def __init__(self, name, path, disk_path=None, uuid=None, owns_dir=True, xml_hook=None):
        if not name or len(name) > NAME_MAX or name.startswith(".") or \
                not all(c.isalnum() or c in "-_." for c in name):
            raise ConflictError("domain name %r: use 1-%d letters, digits, '-', '_' or '.'"
                                % (name, NAME_MAX))
        self.name, self.path, self.uuid = name, path, uuid
        self.disk_path = disk_path or os.path.join(path, "disk.qcow2")
        self.image_path = os.path.join(path, "restore.img")
        self.hook_marker = os.path.join(path, ramhook.MARKER_NAME)
        self.owns_dir, self.xml_hook = owns_dir, xml_hook

    @classmethod
    def in_home(cls, home, name):
        """The CLI's placement: ``<home>/instances/<name>/``."""
        return cls(name, os.path.join(home, "instances", name))

    def exists(self):
        """True if something already occupies this placement."""
        return os.path.exists(self.path if self.owns_dir else self.disk_path)

    def create(self, base):
        """Make the directory (if owned) and a qcow2 disk over ``base``'s disk."""
        if self.owns_dir:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
            try:
                os.mkdir(self.path, 0o755)
            except FileExistsError:
                raise ConflictError("instance directory %s already exists" % self.path) from None
        else:
            os.makedirs(self.path, mode=0o755, exist_ok=True)
            if os.path.exists(self.disk_path):
                raise ConflictError("disk %s already exists" % self.disk_path)
        _check_reachable(self.path)
        qemuimg.create_overlay(self.disk_path, base.disk_path)

    def domain_xml(self, xml, base):
        """``xml`` (from a memory image of ``base``) given this placement's identity and
        paths, booting the base's copies of its kernel and initrd if it has them."""
        xml = domxml.for_instance(xml, self.name, self.disk_path, self.path, base.id, self.uuid)
        xml = domxml.with_boot_files(xml, **base.boot_files())
        return self.xml_hook(xml) if self.xml_hook else xml

    def discard(self):
        """Remove what ``create`` made (the whole directory if owned)."""
        if self.owns_dir:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for path in (self.disk_path, self.image_path, self.hook_marker):
            _remove(path)


def _remove(path):
    """Delete ``path`` if it is there; True if it was."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _check_reachable(path):
    """Fail early if the QEMU user (not root) could not reach ``path``."""
    path = os.path.abspath(path)
    while path != "/":
        if not os.stat(path).st_mode & 0o001:
            raise HypervisorError("%s is not searchable by other users, so QEMU (user "
                                  "libvirt-qemu) cannot open files below it; chmod o+x it or set "
                                  "CLOUDLET_HOME elsewhere" % path)
        path = os.path.dirname(path)


def start(conn, placement, base, header, stream_pieces, paused=False, ram=None):
    """Write a memory image for ``placement`` (its own name, UUID, disk and paths) and
    restore it; the image is deleted once QEMU has loaded it (over a RAM file, the image is a
    FIFO: the stream is made while QEMU starts).

    ``header`` is the ``SaveHeader`` of the source image; ``stream_pieces`` yields the
    bytes of its QEMU stream. With ``ram`` (a ``ramfile.RamFile``) the guest RAM maps that
    file privately and the stream need carry only the pages that differ from it; raises
    ``ramfile.Unusable`` (nothing left running) if libvirt did not run the hook.
    """
    xml = domxml.with_ram_file(placement.domain_xml(header.xml, base),
                               ram.path if ram else None, placement.hook_marker)
    _remove(placement.hook_marker)                 # left by a restore libvirt did itself
    pieces = itertools.chain([header.encode(xml)], stream_pieces)
    try:
        if ram is None:
            with open(placement.image_path, "wb") as out:
                for piece in pieces:
                    out.write(piece)
            domains.restore(conn, placement.image_path, paused=paused)
        else:
            _restore_streamed(conn, placement, pieces)
    finally:
        _remove(placement.image_path)
    if ram is not None:
        if not _remove(placement.hook_marker):
            domains.destroy(conn, placement.name)
            raise ramfile.Unusable("libvirt did not run the hook %s (libvirtd started before "
                                   "it was installed?)" % ramhook.HOOK_PATH) from None
        if not paused:
            _run(conn, domains.lookup(conn, placement.name))


def _restore_streamed(conn, placement, pieces):
    """Restore ``placement``'s domain, paused, from a FIFO fed with ``pieces`` while libvirt
    starts QEMU (the stream is made as QEMU reads it). If making it fails, the domain is
    destroyed and the error raised."""
    path = placement.image_path
    os.mkfifo(path, 0o600)
    failed = []

    def restore():
        try:
            domains.restore(conn, path, paused=True)
        except BaseException as exc:   # raised below, in the caller's thread
            failed.append(exc)

    restorer = threading.Thread(target=restore, daemon=True)
    restorer.start()
    try:
        fd = _open_writer(path, restorer)
        if fd is not None:
            with open(fd, "wb") as fifo:
                for piece in pieces:
                    fifo.write(piece)
    except BrokenPipeError:       # libvirt stopped reading: its error says why
        pass
    except BaseException:
        _stop(conn, placement.name, restorer)
        raise
    restorer.join()
    if failed:
        raise failed[0]


def _stop(conn, name, restorer, patience=60):
    """End the restore ``restorer`` runs after its stream broke off: QEMU waits on a FIFO
    without writers forever (no POLLIN on hang-up), so its domain is destroyed until the
    restore gives up."""
    deadline = time.monotonic() + patience
    while restorer.is_alive() and time.monotonic() < deadline:
        domains.destroy(conn, name)
        restorer.join(0.2)
    domains.destroy(conn, name)


def _open_writer(path, reader):
    """The write end of FIFO ``path`` once libvirt opened it (None if ``reader`` ended
    first)."""
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            if not reader.is_alive():
                return None
            time.sleep(0.002)
            continue
        os.set_blocking(fd, True)
        return fd


def _run(conn, dom):
    """Let the paused ``dom`` run; if it cannot, destroy it."""
    try:
        dom.resume()
    except libvirt.libvirtError as exc:
        domains.destroy(conn, dom.name())
        raise HypervisorError("resuming %s failed: %s" % (dom.name(), exc.get_error_message())) \
            from None


def restore(conn, placement, base, header, ram_size, delta_stream, full_stream, paused=False):
    """Start ``placement``'s domain over ``base``'s RAM file if it can (``delta_stream(ram)``
    yields the stream for it), else from the whole image (``full_stream()``); return
    ``(restore path "delta" or "full", why not "delta" or None)``."""
    ram, why = ramfile.usable(base, header.xml, placement.name, ram_size)
    if ram is not None:
        try:
            start(conn, placement, base, header, delta_stream(ram), paused, ram)
            return "delta", None
        except ramfile.Unusable as exc:
            why = str(exc)
    LOG.warning("restoring %s from its whole memory image: %s", placement.name, why)
    start(conn, placement, base, header, full_stream(), paused)
    return "full", why


def resume(conn, base, placement, paused=False):
    """Start a domain at ``placement`` from ``base``: memory restored, not booted.

    Sets ``placement.restore_path`` (and ``restore_why``, see ``restore``)."""
    domains.ensure_free(conn, placement.name)
    placement.create(base)
    try:
        with open(base.memory_path, "rb") as image, \
                mmap.mmap(image.fileno(), 0, prot=mmap.PROT_READ) as buf:
            header = saveimage.SaveHeader.parse(buf)
            stream = memoryview(buf)[header.stream_offset:]
            try:
                placement.restore_path, placement.restore_why = restore(
                    conn, placement, base, header, None, lambda ram: [ram.resume_stream()],
                    lambda: [stream], paused)
            finally:
                stream.release()   # else closing the mmap hides an error behind BufferError
    except BaseException:
        placement.discard()
        raise
    return placement
