"""The one place where the nova driver calls the overlay engine.

Every function takes plain values (a libvirt connection, paths, ids, domain XML) and
raises ``cloudlet_compute.errors.CloudletError`` subclasses; the driver maps those to nova
exceptions. The engine is imported lazily: nova's test fixtures forbid importing the
``libvirt`` module, which the engine's ``domains`` module does.

Two functions need an engine API that does not exist yet; they are marked ENGINE-TODO and
say what they need (see doc/nova-integration.md, "Engine API needed").
"""

import contextlib
import mmap
import os
import shutil
import xml.etree.ElementTree as ET

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


def open_store(cache_dir):
    """The compute node's base VM store (``[cloudlet] cache_dir``)."""
    from cloudlet_compute import bases
    return bases.BaseStore(cache_dir)


def cached_base(store, base_id):
    """Return the cached base VM ``base_id``, or None."""
    from cloudlet_compute import bases
    from cloudlet_compute.errors import NotFoundError
    if not bases.ID_PATTERN.match(base_id or ''):
        return None
    try:
        return store.get(base_id)
    except NotFoundError:
        return None


def cache_base(store, base_id, name, fetch):
    """Register base ``base_id`` in ``store``: ``fetch(disk_path, memory_path)`` writes the
    two files; the store hashes them and the disk must hash to ``base_id``."""
    from cloudlet_compute.errors import IntegrityError
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


def base_files(base):
    """``{cloudlet_type: path}`` of the four files that make a base VM's Glance images."""
    return {"cloudlet_base_disk": base.disk_path,
            "cloudlet_base_memory": base.memory_path,
            "cloudlet_base_disk_hash": os.path.join(base.path, "disk.digests"),
            "cloudlet_base_memory_hash": os.path.join(base.path, "memory.pages")}


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


def domain_xml_for_nova(base_xml, nova_xml, base_id):
    """ENGINE-TODO: the XML to restore a base's memory image as nova's instance.

    Needed from the engine: ``domxml.for_nova(base_xml, nova_xml, base_id) -> str``: the
    base's machine, CPU, memory and device model (they must match the saved memory), with
    nova's name, UUID, disk source (qcow2 over the cached base disk), ``<interface>``
    elements (MAC, tap target) and serial/console devices, plus the base id in
    ``<metadata>``. Until then the engine's ``for_instance`` gives identity, disk and
    character-device paths; the guest keeps the base's NIC and does not get nova's port.
    """
    from cloudlet_compute import domxml
    for_nova = getattr(domxml, "for_nova", None)
    if for_nova is not None:
        return for_nova(base_xml, nova_xml, base_id)
    name, uuid, disk, workdir = _nova_identity(nova_xml)
    return domxml.for_instance(base_xml, name, disk, workdir, base_id, domain_uuid=uuid)


def resume_into(conn, store, base_id, nova_xml, paused=False):
    """Start nova's domain (``nova_xml``) from base ``base_id``'s memory image.

    The disk in ``nova_xml`` must already hold the base disk's content (nova's qcow2 over
    its cached copy of the base disk image).
    """
    import libvirt
    from cloudlet_compute import saveimage
    from cloudlet_compute.errors import HypervisorError
    base = store.get(base_id)
    _name, _uuid, _disk, workdir = _nova_identity(nova_xml)
    image_path = os.path.join(workdir, "cloudlet-restore.img")
    flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
    try:
        with open(base.memory_path, "rb") as image, \
                mmap.mmap(image.fileno(), 0, prot=mmap.PROT_READ) as buf:
            header = saveimage.SaveHeader.parse(buf)
            xml = domain_xml_for_nova(header.xml, nova_xml, base.id)
            with open(image_path, "wb") as out:
                out.write(header.encode(xml))
                out.write(memoryview(buf)[header.stream_offset:])
        try:
            conn.restoreFlags(image_path, None, flags)
            # A restored domain is transient; nova expects its domains defined.
            dom = conn.lookupByUUIDString(_uuid)
            conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
        except libvirt.libvirtError as exc:
            raise HypervisorError("restoring base %s failed: %s"
                                  % (base.id, exc.get_error_message())) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(image_path)


def synthesize_into(conn, store, location, base_id, nova_xml, paused=False):
    """ENGINE-TODO: VM synthesis into nova's domain (``nova_xml``) and nova's disk.

    Needed from the engine: ``synthesis.synthesize_into(conn, store, location, nova_xml,
    paused=False, expected_base=None, progress_factory=NullProgress) -> timings``: like
    ``synthesize`` but writing the disk delta into the qcow2 named in ``nova_xml`` (nova
    created it over the cached base disk), restoring with ``domxml.for_nova`` (above), and
    refusing an overlay whose base is not ``expected_base``. On failure it must leave no
    domain and none of its own files (nova removes its instance directory).
    """
    from cloudlet_compute import synthesis
    from cloudlet_compute.errors import CloudletError
    impl = getattr(synthesis, "synthesize_into", None)
    if impl is None:
        raise CloudletError("VM synthesis through nova needs the engine's "
                            "synthesis.synthesize_into, which this version lacks")
    return impl(conn, store, location, nova_xml, paused=paused, expected_base=base_id)
