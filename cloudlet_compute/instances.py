"""Domains made from a base VM: their directories, and starting one from a memory image.

Every such domain owns ``$CLOUDLET_HOME/instances/<name>/``: its qcow2 disk over the
cached base disk, its sockets and logs. The directory must be reachable by the QEMU user.
"""

import contextlib
import mmap
import os
import shutil

from cloudlet_compute import domains, domxml, qemuimg, saveimage
from cloudlet_compute.errors import ConflictError, HypervisorError

NAME_MAX = 64


class InstanceDir:
    """The directory of one domain; removed again by ``discard`` if the domain never ran."""

    def __init__(self, home, name):
        if not name or len(name) > NAME_MAX or not all(c.isalnum() or c in "-_." for c in name) \
                or name.startswith("."):
            raise ConflictError("domain name %r: use 1-%d letters, digits, '-', '_' or '.'"
                                % (name, NAME_MAX))
        self.name = name
        self.path = os.path.join(home, "instances", name)
        self.disk_path = os.path.join(self.path, "disk.qcow2")
        self.image_path = os.path.join(self.path, "restore.img")

    def create(self, base):
        """Make the directory and a qcow2 disk over ``base``'s disk."""
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        try:
            os.mkdir(self.path, 0o755)
        except FileExistsError:
            raise ConflictError("instance directory %s already exists" % self.path) from None
        _check_reachable(self.path)
        qemuimg.create_overlay(self.disk_path, base.disk_path)

    def discard(self):
        """Remove the directory and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)


def _check_reachable(path):
    """Fail early if the QEMU user (not root) could not reach ``path``."""
    path = os.path.abspath(path)
    while path != "/":
        if not os.stat(path).st_mode & 0o001:
            raise HypervisorError("%s is not searchable by other users, so QEMU (user "
                                  "libvirt-qemu) cannot open files below it; chmod o+x it or set "
                                  "CLOUDLET_HOME elsewhere" % path)
        path = os.path.dirname(path)


def start(conn, instance, base, header, stream_pieces):
    """Write a memory image for ``instance`` (its own name, UUID, disk and paths) and
    restore it; the image is deleted once QEMU has loaded it.

    ``header`` is the ``SaveHeader`` of the source image; ``stream_pieces`` yields the
    bytes of its QEMU stream.
    """
    xml = domxml.for_instance(header.xml, instance.name, instance.disk_path, instance.path,
                              base.id)
    try:
        with open(instance.image_path, "wb") as out:
            out.write(header.encode(xml))
            for piece in stream_pieces:
                out.write(piece)
        domains.restore(conn, instance.image_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(instance.image_path)


def resume(conn, store, base_ref, name):
    """Start domain ``name`` from base VM ``base_ref``: memory restored, not booted."""
    base = store.get(base_ref)
    domains.ensure_free(conn, name)
    instance = InstanceDir(store.home, name)
    instance.create(base)
    try:
        with open(base.memory_path, "rb") as image, \
                mmap.mmap(image.fileno(), 0, prot=mmap.PROT_READ) as buf:
            header = saveimage.SaveHeader.parse(buf)
            start(conn, instance, base, header, [memoryview(buf)[header.stream_offset:]])
    except BaseException:
        instance.discard()
        raise
    return instance
