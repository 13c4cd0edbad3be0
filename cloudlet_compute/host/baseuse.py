"""Which base VMs the domains of a host use, so that nothing removes a base under a guest.

A domain uses a base if its XML names it (the cloudlet metadata of a restore) or if a disk
backs onto a file of the base's directory: nova rewrites the XML of a hard-rebooted or
resized guest without our metadata, but its qcow2 still backs onto the base's disk.
Running and merely defined domains count alike.
"""

import os
import struct
import xml.etree.ElementTree as ET

import libvirt

from cloudlet_compute.host import domxml

QCOW2_MAGIC = b"QFI\xfb"
# qcow2 header: magic, version (u32), backing_file_offset (u64), backing_file_size (u32).
QCOW2_HEADER = struct.Struct(">4sIQI")
MAX_CHAIN = 16


def qcow2_backing(path):
    """The backing file named by qcow2 image ``path`` (absolute), or None (not qcow2 or no
    backing file)."""
    with open(path, "rb") as f:
        head = f.read(QCOW2_HEADER.size)
        if len(head) < QCOW2_HEADER.size:
            return None
        magic, _version, offset, size = QCOW2_HEADER.unpack(head)
        if magic != QCOW2_MAGIC or not offset or not 0 < size <= 4096:
            return None
        f.seek(offset)
        name = os.fsdecode(f.read(size))
    return os.path.normpath(os.path.join(os.path.dirname(path), name))


def _chain(path):
    """``path`` and the files it backs onto, top first."""
    files = [path]
    while len(files) < MAX_CHAIN:
        try:
            backing = qcow2_backing(files[-1])
        except FileNotFoundError:
            break
        if backing is None:
            break
        files.append(backing)
    return files


def disk_files(xml):
    """Source paths of the file-backed disks in domain ``xml``."""
    root = ET.fromstring(xml)
    return [disk.find("source").get("file") for disk in root.iter("disk")
            if disk.get("type") == "file" and disk.find("source") is not None
            and disk.find("source").get("file")]


def bases_in_use(conn, bases_dir):
    """Ids of the bases under ``bases_dir`` that a domain of ``conn`` uses. Raises OSError
    if a disk cannot be read (the caller then cannot tell, and must not remove a base)."""
    used, prefix = set(), os.path.join(os.path.abspath(bases_dir), "")
    for dom in conn.listAllDomains():
        try:
            xml = dom.XMLDesc()
        except libvirt.libvirtError:   # gone since the listing
            continue
        used.add(domxml.base_id_of(xml))
        for disk in disk_files(xml):
            for path in _chain(disk):
                if path.startswith(prefix):
                    used.add(path[len(prefix):].split(os.sep)[0])
    used.discard(None)
    return used
