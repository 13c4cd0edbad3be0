"""Domains made from a base VM: where they live, and starting one from a memory image.

Each such domain has a directory (its ``Placement``) holding its qcow2 disk over the
cached base disk, its sockets and logs; it must be reachable by the QEMU user.
"""

import contextlib
import mmap
import os
import shutil

from cloudlet_compute.errors import ConflictError, HypervisorError
from cloudlet_compute.format import saveimage
from cloudlet_compute.host import domains, domxml, qemuimg

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
        for path in (self.disk_path, self.image_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _check_reachable(path):
    """Fail early if the QEMU user (not root) could not reach ``path``."""
    path = os.path.abspath(path)
    while path != "/":
        if not os.stat(path).st_mode & 0o001:
            raise HypervisorError("%s is not searchable by other users, so QEMU (user "
                                  "libvirt-qemu) cannot open files below it; chmod o+x it or set "
                                  "CLOUDLET_HOME elsewhere" % path)
        path = os.path.dirname(path)


def start(conn, placement, base, header, stream_pieces, paused=False):
    """Write a memory image for ``placement`` (its own name, UUID, disk and paths) and
    restore it; the image is deleted once QEMU has loaded it.

    ``header`` is the ``SaveHeader`` of the source image; ``stream_pieces`` yields the
    bytes of its QEMU stream.
    """
    xml = placement.domain_xml(header.xml, base)
    try:
        with open(placement.image_path, "wb") as out:
            out.write(header.encode(xml))
            for piece in stream_pieces:
                out.write(piece)
        domains.restore(conn, placement.image_path, paused=paused)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(placement.image_path)


def resume(conn, base, placement, paused=False):
    """Start a domain at ``placement`` from ``base``: memory restored, not booted."""
    domains.ensure_free(conn, placement.name)
    placement.create(base)
    try:
        with open(base.memory_path, "rb") as image, \
                mmap.mmap(image.fileno(), 0, prot=mmap.PROT_READ) as buf:
            header = saveimage.SaveHeader.parse(buf)
            stream = memoryview(buf)[header.stream_offset:]
            try:
                start(conn, placement, base, header, [stream], paused)
            finally:
                stream.release()   # else closing the mmap hides an error behind BufferError
    except BaseException:
        placement.discard()
        raise
    return placement
