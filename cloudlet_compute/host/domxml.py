"""Domain XML edits: give a domain from a save image a new identity and host paths."""

import os
import uuid
import xml.etree.ElementTree as ET

from cloudlet_compute.errors import ConflictError, FormatError

NS = "https://openstackpp.org/xmlns/cloudlet/1"
ET.register_namespace("cloudlet", NS)
CHARDEVS = ("serial", "console", "channel", "parallel")
RAM_FILE, RAM_MARKER = "ram-file", "ram-marker"     # attributes of <cloudlet:instance>


def _parse(xml):
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise FormatError("domain XML does not parse: %s" % exc) from None


def _disks(root):
    """The domain's disks, cdroms and floppies aside."""
    return [d for d in root.iter("disk") if d.get("device", "disk") not in ("cdrom", "floppy")]


def _disk_format(disk):
    driver = disk.find("driver")
    return driver.get("type", "raw") if driver is not None else "raw"


def file_disk(xml):
    """Return ``(path, format)`` of the domain's one file-backed disk.

    Raise ``ConflictError`` if there is not exactly one (cdroms and floppies aside).
    """
    disks = _disks(_parse(xml))
    if len(disks) != 1 or disks[0].get("type") != "file" or disks[0].find("source") is None:
        raise ConflictError("the domain must have exactly one file-backed disk (it has %d disks)"
                            % len(disks))
    return disks[0].find("source").get("file"), _disk_format(disks[0])


SOURCE_FORMATS = ("raw", "qcow2")
DISK_TYPES = {"network": "a network disk", "block": "a host block device",
              "volume": "a storage pool volume", "dir": "a host directory",
              "nvme": "a host NVMe device", "vhostuser": "a vhost-user disk"}
DISK_FLAGS = {"shareable": "shared with other domains", "readonly": "read-only",
              "transient": "transient"}
# Devices whose state lives outside the disk file and the RAM, which a capture cannot take.
OUTSIDE_STATE = (("hostdev", "a host device (<hostdev>)"),
                 ("interface[@type='hostdev']", "a host network device (<interface "
                                                "type='hostdev'>)"),
                 ("filesystem", "a host directory share (<filesystem>)"),
                 ("shmem", "a shared memory device (<shmem>)"),
                 ("tpm", "a TPM (<tpm>)"))


def _disk_problem(disk):
    """What makes ``disk`` unusable as a source's disk, or None."""
    target = disk.find("target")
    dev = "disk %s" % (target.get("dev") if target is not None else "?")
    kind, source = disk.get("type", "file"), disk.find("source")
    if kind != "file":
        return "%s is %s (type='%s'), not a file" % (dev, DISK_TYPES.get(kind, "a device"), kind)
    if source is None or not source.get("file"):
        return "%s has no source file" % dev
    if _disk_format(disk) not in SOURCE_FORMATS:
        return "%s is %s, not raw or qcow2" % (dev, _disk_format(disk))
    for flag, what in DISK_FLAGS.items():
        if disk.find(flag) is not None:
            return "%s is %s (<%s/>)" % (dev, what, flag)
    if disk.find("encryption") is not None or source.find("encryption") is not None:
        return "%s is encrypted" % dev
    if source.find("dataStore") is not None:
        return "%s keeps its data in a separate file (<dataStore>)" % dev
    for layer in disk.iter("backingStore"):
        if layer.get("type", "file") != "file":
            return "%s has %s in its backing chain (type='%s')" % (
                dev, DISK_TYPES.get(layer.get("type"), "a device"), layer.get("type"))
    return None


def _domain_problem(root):
    """What in domain ``root`` (disks aside) a capture cannot take, or None."""
    if root.get("type") not in ("kvm", "qemu"):
        return "it is a %s domain, not KVM or QEMU (TCG)" % root.get("type")
    if root.find("memoryBacking/hugepages") is not None:
        return "its RAM is backed by hugepages (<memoryBacking><hugepages/>)"
    devices = root.find("devices")
    if devices is None:
        devices = ET.Element("devices")
    if devices.find("memory") is not None:
        return ("it has a memory device (<memory model='%s'>) beside its RAM"
                % devices.find("memory").get("model"))
    for path, what in OUTSIDE_STATE:
        if devices.find(path) is not None:
            return "it has %s, whose state is outside its disk and RAM" % what
    return None


def source_problem(xml):
    """Why domain XML ``xml`` cannot be captured (``base create``, ``overlay create``), as
    one line naming the domain, or None if it can: a KVM or QEMU (TCG) domain with exactly
    one disk (cdroms and floppies aside), a raw or qcow2 file (a qcow2's backing chain of
    files), no hugepages and no device whose state lives outside the disk and the RAM."""
    root = _parse(xml)
    disks = _disks(root)
    problem = _domain_problem(root)
    if problem is None and len(disks) != 1:
        problem = "it has %d disks, not one (cdroms and floppies aside)" % len(disks)
    problem = problem or _disk_problem(disks[0])
    if problem is None:
        return None
    return "domain %s cannot be captured: %s" % (root.findtext("name") or "?", problem)


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


# What the guest trims (a deleted file's blocks) or writes as zeros becomes zero clusters
# of the instance's qcow2, not data: its overlay does not carry them (issue 13 item 7).
DISK_DISCARD = {"discard": "unmap", "detect_zeroes": "unmap"}


def for_instance(xml, name, disk_path, workdir, base_id, domain_uuid=None):
    """Return ``xml`` renamed to ``name`` with a new UUID, ``disk_path`` as its qcow2 disk
    (discards passed through: ``DISK_DISCARD``), every character-device path moved into
    ``workdir``, and ``base_id`` in its metadata."""
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
    driver = ET.Element("driver", name="qemu", type="qcow2", **DISK_DISCARD)
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


def ram_file_refusal(xml):
    """Why a domain may not map a shared base RAM file, or None.

    QEMU 7.2 punches holes into a privately mapped backing file when the guest gives pages
    back (balloon inflate or free page reporting, virtio-mem): that would reach every VM
    sharing the file. Other memory backings (hugepages, NUMA nodes) name other RAM blocks.
    """
    root = _parse(xml)
    balloons = root.findall("devices/memballoon")
    if not balloons or any(b.get("model") != "none" for b in balloons):
        return "the domain has a memory balloon (it could punch holes in the shared RAM file)"
    if root.find("devices/memory") is not None:
        return "the domain has memory devices (virtio-mem, DIMMs)"
    if root.find("cpu/numa") is not None:
        return "the domain has NUMA nodes (their RAM blocks are not pc.ram)"
    backing = root.find("memoryBacking")
    if backing is not None and not _ours(backing):
        return "the domain has a memory backing of its own"
    return None


def _ours(backing):
    """True if ``<memoryBacking>`` is what ``with_ram_file`` adds, nothing more."""
    return sorted((c.tag, sorted(c.attrib.items())) for c in backing) == \
        [("access", [("mode", "private")]), ("source", [("type", "file")])] and not backing.attrib


def with_ram_file(xml, ram_path=None, marker=None):
    """``xml`` with its guest RAM privately mapped from ``ram_path``: ``<memoryBacking>``
    file/private, and ``ram-file``/``ram-marker`` on ``<cloudlet:instance>`` naming the file and
    the hook's marker (``host/ramhook.py``; libvirt keeps one metadata element per namespace).
    With ``ram_path`` None, both removed (a memory backing of that shape is taken for ours:
    a domain captured from one restored this way has it)."""
    root = _parse(xml)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.Element("metadata")
        root.insert(3, metadata)
    node = metadata.find("{%s}instance" % NS)
    if node is None:
        node = ET.SubElement(metadata, "{%s}instance" % NS)
    for attr in (RAM_FILE, RAM_MARKER):
        node.attrib.pop(attr, None)
    backing = root.find("memoryBacking")
    if backing is not None and _ours(backing):
        root.remove(backing)
    if ram_path is None:
        return ET.tostring(root, encoding="unicode")
    backing = ET.Element("memoryBacking")
    ET.SubElement(backing, "source", type="file")
    ET.SubElement(backing, "access", mode="private")
    memory = root.find("currentMemory")
    memory = memory if memory is not None else root.find("memory")
    root.insert(list(root).index(memory) + 1, backing)
    node.set(RAM_FILE, ram_path)
    node.set(RAM_MARKER, marker)
    return ET.tostring(root, encoding="unicode")
