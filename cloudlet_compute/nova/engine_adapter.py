"""The one place where the nova driver calls the overlay engine.

Every function takes plain values (a libvirt connection, paths, ids, domain XML) and
raises ``cloudlet_compute.errors.CloudletError`` subclasses; the driver maps those to nova
exceptions. The engine is imported lazily: nova's test fixtures forbid importing the
``libvirt`` module, which the engine's ``domains`` module does.

Restores go through the engine's ``instances.Placement``: nova's name, UUID, directory and
disk, plus a hook that puts nova's NICs and consoles into the restored domain's XML.
"""

import contextlib
import copy
import os
import shutil
import xml.etree.ElementTree as ET

from oslo_log import log as logging

from cloudlet_compute.errors import ConflictError, HypervisorError, IntegrityError, NotFoundError

LOG = logging.getLogger(__name__)


def open_store(cache_dir):
    """The compute node's base VM store (``[cloudlet] cache_dir``)."""
    from cloudlet_compute import bases
    return bases.BaseStore(cache_dir)


def cached_base(store, base_id):
    """Return the cached base VM ``base_id``, or None."""
    from cloudlet_compute import bases
    if not bases.ID_PATTERN.match(base_id or ''):
        return None
    try:
        return store.get(base_id)
    except NotFoundError:
        return None


def cache_base(store, base_id, name, fetch):
    """Register base ``base_id`` in ``store``: ``fetch(disk_path, memory_path)`` writes the
    two files; the store hashes them and the disk must hash to ``base_id``."""
    work = store.scratch("fetch-")
    try:
        disk, memory = os.path.join(work, "disk.raw"), os.path.join(work, "memory.img")
        fetch(disk, memory)
        base = store.add(disk, memory, name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if base.id != base_id:
        store.delete(base.id)
        raise IntegrityError("the base disk image hashes to %s, its base_sha256_uuid says %s"
                             % (base.id, base_id))
    return base


def overlay_base_id(store, location):
    """Read only the meta of the overlay at ``location``; return the base id it needs."""
    from cloudlet_compute import overlay
    work = store.scratch("meta-")
    try:
        meta, _size = overlay.info(location, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta["base_vm_sha256"]


def create_base(conn, store, domain_name, name):
    """Snapshot running domain ``domain_name`` into a new base VM (it keeps running)."""
    return store.create_from_domain(conn, domain_name, name)


def create_overlay(conn, store, domain_name, out_path):
    """Write the VM overlay of ``domain_name`` (made from a cached base) to ``out_path``."""
    from cloudlet_compute import overlay
    meta, timings = overlay.create(conn, store, domain_name, out_path)
    LOG.info("overlay of %s: %s", domain_name, timings)
    return meta


def _nova_identity(nova_xml):
    """``(name, uuid, disk path, instance dir)`` of the domain nova wants to create."""
    root = ET.fromstring(nova_xml)
    disks = [d for d in root.iter("disk") if d.get("device", "disk") == "disk"]
    disk = disks[0].find("source").get("file")
    return root.findtext("name"), root.findtext("uuid"), disk, os.path.dirname(disk)


def nova_devices_hook(nova_xml):
    """An ``xml_hook`` for the engine's Placement: nova's NICs and consoles in the domain.

    The restored domain must keep the base's device model (the saved memory expects it),
    so each of nova's ``<interface>`` elements replaces the base's interface at the same
    position but keeps the base's PCI ``<address>``; nova's ``<serial>``/``<console>``
    replace the base's (ISA serial ports: the backend may change, the count must not).
    """
    nova_devices = ET.fromstring(nova_xml).find("devices")

    def hook(xml):
        root = ET.fromstring(xml)
        devices = root.find("devices")
        base_nics = devices.findall("interface")
        nova_nics = nova_devices.findall("interface")
        if len(nova_nics) > len(base_nics):
            raise ConflictError("nova gives the server %d network interfaces, the base VM "
                                "has %d; use as many networks as the base VM had"
                                % (len(nova_nics), len(base_nics)))
        for base_nic, nova_nic in zip(base_nics, nova_nics):
            nic = copy.deepcopy(nova_nic)
            for old in nic.findall("address"):
                nic.remove(old)
            for address in base_nic.findall("address"):
                nic.append(copy.deepcopy(address))
            devices.insert(list(devices).index(base_nic), nic)
            devices.remove(base_nic)
        for extra in base_nics[len(nova_nics):]:
            LOG.warning("base VM NIC %s has no nova port; it stays unplugged",
                        extra.find("mac").get("address") if extra.find("mac") is not None
                        else "?")
        for tag in ("serial", "console"):
            base_devs, nova_devs = devices.findall(tag), nova_devices.findall(tag)
            if len(base_devs) != len(nova_devs):
                continue  # keep the base's own (their paths are already in the instance dir)
            for base_dev, nova_dev in zip(base_devs, nova_devs):
                devices.insert(list(devices).index(base_dev), copy.deepcopy(nova_dev))
                devices.remove(base_dev)
        return ET.tostring(root, encoding="unicode")
    return hook


def placement_for_nova(nova_xml):
    """The engine's Placement for nova's domain: nova's name, UUID, directory and disk.

    nova's ``_create_image`` already made the disk, a qcow2 over nova's ``_base`` copy of
    the base disk image; the engine makes its own over the verified cached base, so nova's
    fresh, never-used one is removed first. nova owns (and deletes) the directory.
    """
    from cloudlet_compute import instances
    name, uuid, disk, workdir = _nova_identity(nova_xml)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(disk)
    return instances.Placement(name, workdir, disk_path=disk, uuid=uuid, owns_dir=False,
                               xml_hook=nova_devices_hook(nova_xml))


def _finish_restore(conn, placement):
    """nova expects a persistent domain."""
    import libvirt
    try:
        dom = conn.lookupByUUIDString(placement.uuid)
        conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
    except libvirt.libvirtError as exc:
        raise HypervisorError("finishing the restore of %s failed: %s"
                              % (placement.name, exc.get_error_message())) from None


def resume_into(conn, store, base_id, nova_xml, paused=False):
    """Start nova's domain (``nova_xml``) from base ``base_id``'s memory image."""
    from cloudlet_compute import instances
    base = store.get(base_id)
    placement = placement_for_nova(nova_xml)
    instances.resume(conn, base, placement, paused=paused)
    _finish_restore(conn, placement)


def synthesize_into(conn, store, location, base_id, nova_xml, paused=False):
    """VM synthesis from the overlay at ``location`` into nova's domain (``nova_xml``).

    The overlay must be for base ``base_id`` (the server's image). On failure the engine
    leaves no domain and none of its files; nova removes its instance directory.
    """
    from cloudlet_compute import synthesis
    placement = placement_for_nova(nova_xml)
    timings = synthesis.synthesize(conn, store, location, placement, require_base=base_id,
                                   paused=paused)
    _finish_restore(conn, placement)
    LOG.info("synthesized %s: %s", placement.name, timings)
    return timings
