"""Domain XML edits: give a domain from a save image a new identity and host paths."""

import os
import uuid
import xml.etree.ElementTree as ET

from cloudlet_compute.errors import ConflictError, FormatError

NS = "https://openstackpp.org/xmlns/cloudlet/1"
ET.register_namespace("cloudlet", NS)
CHARDEVS = ("serial", "console", "channel", "parallel")


def _parse(xml):
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise FormatError("domain XML does not parse: %s" % exc) from None


def file_disk(xml):
    """Return ``(path, format)`` of the domain's one file-backed disk.

    Raise ``ConflictError`` if there is not exactly one (cdroms and floppies aside).
    """
    disks = [d for d in _parse(xml).iter("disk") if d.get("device", "disk") == "disk"]
    if len(disks) != 1 or disks[0].get("type") != "file" or disks[0].find("source") is None:
        raise ConflictError("the domain must have exactly one file-backed disk (it has %d disks)"
                            % len(disks))
    driver = disks[0].find("driver")
    fmt = driver.get("type", "raw") if driver is not None else "raw"
    return disks[0].find("source").get("file"), fmt


def memory_mib(xml):
    """The guest RAM a domain XML asks for, in MiB (rounded up)."""
    node = _parse(xml).find("memory")
    units = {"b": 1, "bytes": 1, "KiB": 1 << 10, "k": 1 << 10, "MiB": 1 << 20, "M": 1 << 20,
             "GiB": 1 << 30, "G": 1 << 30}
    size = int(node.text) * units.get(node.get("unit", "KiB"), 1 << 10)
    return -(-size // (1 << 20))


def base_id_of(xml):
    """Return the base VM id recorded in a domain's metadata, or None."""
    node = _parse(xml).find("metadata/{%s}instance" % NS)
    return node.get("base") if node is not None else None


def for_instance(xml, name, disk_path, workdir, base_id, domain_uuid=None):
    """Return ``xml`` renamed to ``name`` with a new UUID, ``disk_path`` as its qcow2 disk,
    every character-device path moved into ``workdir``, and ``base_id`` in its metadata."""
    root = _parse(xml)
    root.find("name").text = name
    uuid_node = root.find("uuid")
    if uuid_node is None:
        uuid_node = ET.SubElement(root, "uuid")
    uuid_node.text = domain_uuid or str(uuid.uuid4())
    for sysinfo_uuid in root.iter("entry"):
        if sysinfo_uuid.get("name") == "uuid":
            sysinfo_uuid.text = uuid_node.text

    disks = [d for d in root.iter("disk") if d.get("device", "disk") == "disk"]
    if len(disks) != 1:
        raise ConflictError("the base domain must have exactly one disk, it has %d" % len(disks))
    disk = disks[0]
    disk.set("type", "file")
    for child in list(disk):
        if child.tag in ("source", "backingStore", "driver"):
            disk.remove(child)
    driver = ET.Element("driver", name="qemu", type="qcow2")
    source = ET.Element("source", file=disk_path)
    disk.insert(0, source)
    disk.insert(0, driver)

    devices = root.find("devices")
    for dev in devices:
        if dev.tag not in CHARDEVS:
            continue
        for node in dev.iter():
            for attr in ("path", "file"):
                if node.tag in ("source", "log") and node.get(attr):
                    node.set(attr, os.path.join(workdir, os.path.basename(node.get(attr))))

    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.Element("metadata")
        root.insert(3, metadata)
    for old in metadata.findall("{%s}instance" % NS):
        metadata.remove(old)
    ET.SubElement(metadata, "{%s}instance" % NS, base=base_id)
    return ET.tostring(root, encoding="unicode")


BOOT_ELEMENTS = ("kernel", "initrd", "cmdline")


def boot_files(xml):
    """``{"kernel": path, "initrd": path, "cmdline": text}`` of a direct-kernel-boot domain's
    ``<os>`` (None for each element it lacks; all None for a domain with a boot loader)."""
    os_node = _parse(xml).find("os")
    return {tag: (os_node.findtext(tag) if os_node is not None else None) or None
            for tag in BOOT_ELEMENTS}


def with_boot_files(xml, kernel=None, initrd=None, cmdline=None):
    """``xml`` whose ``<os>`` boots ``kernel`` with ``initrd`` and ``cmdline``; an argument
    left None keeps that element as it is. A domain without ``<kernel>`` is returned as is."""
    root = _parse(xml)
    os_node = root.find("os")
    if os_node is None or os_node.find("kernel") is None:
        return xml
    for tag, value in (("kernel", kernel), ("initrd", initrd), ("cmdline", cmdline)):
        if value is None:
            continue
        node = os_node.find(tag)
        if node is None:   # after those that come before it in libvirt's order
            earlier = BOOT_ELEMENTS[:BOOT_ELEMENTS.index(tag)]
            last = [n for n in os_node if n.tag in earlier][-1]
            node = ET.Element(tag)
            os_node.insert(list(os_node).index(last) + 1, node)
        node.text = value
    return ET.tostring(root, encoding="unicode")
