"""The one place where the nova driver calls the overlay engine.

Every function takes plain values (a libvirt connection, paths, ids, domain XML) and
raises ``cloudlet_compute.errors.CloudletError`` subclasses; the driver maps those to nova
exceptions. The engine is imported lazily: nova's test fixtures forbid importing the
``libvirt`` module, which the engine's ``domains`` module does (``fetchpolicy``, which
nova-api uses too, imports no libvirt).

Restores go through the engine's ``instances.Placement``: nova's name, UUID, directory and
disk, plus a hook that puts nova's consoles (and nova's copies of the kernel and ramdisk, if
the image names them) into the restored domain's XML and disconnects the snapshot's NICs;
after the restore nova's NICs are hot-plugged in their place.
"""

import contextlib
import copy
import os
import shutil
import xml.etree.ElementTree as ET
from urllib import parse

from oslo_log import log as logging

from cloudlet_compute.errors import (CloudletError, HypervisorError, IntegrityError,
                                     NotFoundError)
from cloudlet_compute.read import fetchpolicy   # no libvirt below it

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


def bases_in_use(conn, store):
    """Ids of the cached bases that a domain of ``conn`` (running or defined) uses."""
    from cloudlet_compute.host import baseuse
    return baseuse.bases_in_use(conn, store.bases_dir)


def evict_base(store, base_id, conn):
    """Remove cached base ``base_id``; the store refuses (ConflictError) while a domain of
    ``conn`` names it."""
    return store.delete(base_id, conn)


RefusedURL = fetchpolicy.RefusedURL
OVERLAY_URL_SCHEMES = ('http', 'https', 'file')


class RefusedScheme(CloudletError):
    """An ``overlay_url`` whose scheme the ``[cloudlet] overlay_url_schemes`` option refuses."""


class OverlayURLPolicy:
    """What a server's ``overlay_url`` may be, from the ``[cloudlet] overlay_*`` options:
    ``schemes``, and ``fetch`` (the engine's FetchPolicy) for an http(s) URL's host and port.

    Built once when nova-api or nova-compute starts (``from_options``); both check a URL's
    scheme with ``check_scheme``. Raises ValueError naming the option that is wrong.
    """

    def __init__(self, schemes, allowed_hosts, disallowed_hosts, allowed_ports, time_limit=0):
        bad = set(schemes) - set(OVERLAY_URL_SCHEMES)
        if bad:
            raise ValueError("overlay_url_schemes: unknown %s" % ", ".join(sorted(bad)))
        self.schemes = tuple(schemes)
        try:
            self.fetch = fetchpolicy.FetchPolicy(allowed_hosts, disallowed_hosts, allowed_ports,
                                                 time_limit=time_limit)
        except ValueError as exc:
            raise ValueError("overlay_allowed_ports: %s" % exc) from None

    @classmethod
    def from_options(cls, opts):
        """The policy of ``opts``, nova's ``CONF.cloudlet``."""
        return cls(opts.overlay_url_schemes, opts.overlay_allowed_hosts,
                   opts.overlay_disallowed_hosts, opts.overlay_allowed_ports,
                   opts.overlay_fetch_time_limit)

    def check_scheme(self, url):
        """Raise RefusedScheme unless ``url``'s scheme is allowed; return the scheme."""
        scheme = parse.urlsplit(url).scheme
        if scheme not in self.schemes:
            raise RefusedScheme("overlay_url scheme %r is not allowed by this cloud "
                                "(allowed: %s)" % (scheme, ", ".join(self.schemes)))
        return scheme


def overlay_size_bound(store, base_id):
    """The most bytes an overlay of cached base ``base_id`` can take."""
    return store.get(base_id).overlay_size_bound()


def overlay_base_id(store, location, base_id, policy):
    """Read only the meta of the overlay at ``location`` (an overlay of cached base
    ``base_id`` at most, fetched under ``policy``); return the base id it needs."""
    from cloudlet_compute.read import overlayinfo
    work = store.scratch("meta-")
    try:
        meta, _size = overlayinfo.info(location, work, policy=policy,
                                       max_bytes=overlay_size_bound(store, base_id))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta["base_vm_sha256"]


def restored_base_id(domain_xml):
    """The base VM a domain was restored from (its cloudlet metadata), or None."""
    from cloudlet_compute.host import domxml
    return domxml.base_id_of(domain_xml)


def discard_domain(conn, name):
    """Stop and forget domain ``name`` if it exists (cleanups)."""
    from cloudlet_compute.host import domains
    domains.destroy(conn, name)


def create_base(conn, store, domain_name, name):
    """Snapshot running domain ``domain_name`` into a new base VM (it keeps running)."""
    return store.create_from_domain(conn, domain_name, name)


def create_overlay(conn, store, domain_name, out_path):
    """Write the VM overlay of ``domain_name`` (made from a cached base) to ``out_path``."""
    from cloudlet_compute.write import overlay
    meta, timings = overlay.create(conn, store, domain_name, out_path)
    LOG.info("overlay of %s: %s", domain_name, timings)
    return meta


def _nova_identity(nova_xml):
    """``(name, uuid, disk path, instance dir)`` of the domain nova wants to create."""
    root = ET.fromstring(nova_xml)
    disks = [d for d in root.iter("disk") if d.get("device", "disk") == "disk"]
    disk = disks[0].find("source").get("file")
    return root.findtext("name"), root.findtext("uuid"), disk, os.path.dirname(disk)


# The snapshot's own NICs stay in the restored domain (the saved memory holds their device
# state) but disconnected, under these user aliases; they are detached right after the restore.
SNAPSHOT_NIC_ALIAS = "ua-cloudlet-snapshot-nic"

# Children of a base NIC that tie it to the base host's network (dropped when disconnecting it);
# what stays (mac, model, driver, address, rom, mtu...) is device model the saved memory expects.
_BACKEND_TAGS = ("source", "target", "virtualport", "bandwidth", "filterref", "vlan", "script",
                 "ip", "route", "link", "alias", "backend", "portForward", "tune", "coalesce")


def _disconnected(base_nic, index):
    """The base's NIC as an unconnected tap with its link down, named for the detach."""
    nic = copy.deepcopy(base_nic)
    for child in list(nic):
        if child.tag in _BACKEND_TAGS:
            nic.remove(child)
    for key in list(nic.attrib):
        del nic.attrib[key]
    nic.set("type", "ethernet")
    driver = nic.find("driver")
    if driver is not None and driver.get("name") == "vhost":
        del driver.attrib["name"]  # the device model is the same without vhost-net
    ET.SubElement(nic, "link", state="down")
    ET.SubElement(nic, "alias", name="%s%d" % (SNAPSHOT_NIC_ALIAS, index))
    return nic


def nova_nic_xmls(nova_xml):
    """nova's ``<interface>`` elements, as XML to hot-plug (no PCI address: libvirt picks a
    free slot in the restored domain)."""
    nics = []
    for nic in ET.fromstring(nova_xml).find("devices").findall("interface"):
        nic = copy.deepcopy(nic)
        for child in nic.findall("address") + nic.findall("alias"):
            nic.remove(child)
        nics.append(ET.tostring(nic, encoding="unicode"))
    return nics


def nova_devices_hook(nova_xml):
    """An ``xml_hook`` for the engine's Placement: the restored domain with nova's consoles.

    The restored domain must keep the base's device model (the saved memory expects it):
    the snapshot's NICs stay at their PCI address, but disconnected (an unconnected tap, link
    down) and named ``ua-cloudlet-snapshot-nic<N>``; after the restore they are detached and
    nova's NICs hot-plugged (``plug_nova_nics``). nova's ``<serial>``/``<console>`` replace
    the base's (ISA serial ports: the backend may change, the count must not). If nova's
    ``<os>`` boots a kernel (the image's ``kernel_id``/``ramdisk_id``, fetched into the
    instance directory), the domain boots nova's files; else the base store's copies.
    """
    from cloudlet_compute.host import domxml
    nova_devices = ET.fromstring(nova_xml).find("devices")
    nova_boot = domxml.boot_files(nova_xml)

    def hook(xml):
        root = ET.fromstring(domxml.with_boot_files(xml, **nova_boot))
        devices = root.find("devices")
        for index, base_nic in enumerate(devices.findall("interface")):
            devices.insert(list(devices).index(base_nic), _disconnected(base_nic, index))
            devices.remove(base_nic)
        for tag in ("serial", "console"):
            base_devs, nova_devs = devices.findall(tag), nova_devices.findall(tag)
            if len(base_devs) != len(nova_devs):
                continue  # keep the base's own (their paths are already in the instance dir)
            for base_dev, nova_dev in zip(base_devs, nova_devs):
                devices.insert(list(devices).index(base_dev), copy.deepcopy(nova_dev))
                devices.remove(base_dev)
        return ET.tostring(root, encoding="unicode")
    return hook


def snapshot_nic_aliases(domain_xml):
    """Aliases of the disconnected snapshot NICs still in ``domain_xml``."""
    aliases = []
    for nic in ET.fromstring(domain_xml).iter("interface"):
        alias = nic.find("alias")
        if alias is not None and (alias.get("name") or "").startswith(SNAPSHOT_NIC_ALIAS):
            aliases.append(alias.get("name"))
    return aliases


def plug_nova_nics(dom, nova_xml):
    """Replace the restored domain's snapshot NICs by nova's: detach the former, hot-plug the
    latter, live and in the persistent definition. Works on a paused domain (nova keeps it
    paused until Neutron reports the ports plugged); the guest sees the change when it runs.
    """
    import libvirt
    from cloudlet_compute.host import domains
    try:
        live = dom.XMLDesc(0)
    except libvirt.libvirtError as exc:
        raise HypervisorError("reading the restored domain's XML failed: %s"
                              % exc.get_error_message()) from None
    for alias in snapshot_nic_aliases(live):
        domains.detach_device_alias(dom, alias, live=True, config=True)
    for nic in nova_nic_xmls(nova_xml):
        domains.attach_device(dom, nic, live=True, config=True)


def placement_for_nova(nova_xml):
    """The engine's Placement for nova's domain: nova's name, UUID, directory and disk.

    nova's ``_create_image`` already made the disk, a qcow2 over nova's ``_base`` copy of
    the base disk image; the engine makes its own over the verified cached base, so nova's
    fresh, never-used one is removed first. nova owns (and deletes) the directory.
    """
    from cloudlet_compute.host import instances
    name, uuid, disk, workdir = _nova_identity(nova_xml)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(disk)
    return instances.Placement(name, workdir, disk_path=disk, uuid=uuid, owns_dir=False,
                               xml_hook=nova_devices_hook(nova_xml))


def _finish_restore(conn, placement, nova_xml):
    """nova expects a persistent domain, with its NICs: define it, then plug nova's NICs.
    On failure the domain is removed (nova cleans up its ports and directory)."""
    import libvirt
    from cloudlet_compute.host import domains
    try:
        dom = conn.lookupByUUIDString(placement.uuid)
        conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
        plug_nova_nics(dom, nova_xml)
    except libvirt.libvirtError as exc:
        domains.destroy(conn, placement.name)
        raise HypervisorError("finishing the restore of %s failed: %s"
                              % (placement.name, exc.get_error_message())) from None
    except BaseException:
        domains.destroy(conn, placement.name)
        raise


def resume_into(conn, store, base_id, nova_xml, paused=False):
    """Start nova's domain (``nova_xml``) from base ``base_id``'s memory image."""
    from cloudlet_compute.host import instances
    base = store.get(base_id)
    placement = placement_for_nova(nova_xml)
    instances.resume(conn, base, placement, paused=paused)
    _finish_restore(conn, placement, nova_xml)


def synthesize_into(conn, store, location, base_id, nova_xml, paused=False, policy=None,
                    progress=None):
    """VM synthesis from the overlay at ``location`` into nova's domain (``nova_xml``).

    The overlay must be for base ``base_id`` (the server's image); an http(s) location is
    fetched under ``policy``; ``progress(percent)``, if given, hears how much of the overlay
    has been fetched and applied, in steps of 5 %. On failure the engine leaves no domain and
    none of its files; nova removes its instance directory.
    """
    from cloudlet_compute.read import synthesis
    from cloudlet_compute.progress import NullProgress, percent_steps
    placement = placement_for_nova(nova_xml)
    factory = NullProgress
    if progress is not None:
        steps = percent_steps(progress)

        def factory(label, total):
            return NullProgress(label, total, callback=lambda _label, done, total: (
                steps(done / total) if total else None))
    timings = synthesis.synthesize(conn, store, location, placement, factory,
                                   require_base=base_id, paused=paused, policy=policy)
    _finish_restore(conn, placement, nova_xml)
    LOG.info("synthesized %s: %s", placement.name, timings)
    return timings


def handoff_listener(host):
    """A one-handoff listener on ``host`` with a fresh secret (``url``, ``secret_text``)."""
    from cloudlet_compute.handoff import wire
    return wire.Listener(host)


def handoff_send(conn, store, domain_name, listener, dest_uuid, wait, check, progress,
                 compression="auto"):
    """Wait for destination server ``dest_uuid`` at ``listener``; hand ``domain_name`` off to
    it (``compression``: ``auto`` or a forced codec, ``[cloudlet] handoff_compression``).
    On success the domain is left stopped (nova deletes it); on failure it runs."""
    from cloudlet_compute.handoff import source
    channel = listener.accept(dest_uuid, wait, check)
    stats = source.send(conn, store, domain_name, channel, progress, codec=compression,
                        result_wait=wait)
    LOG.info("handoff of %s: %s", domain_name, stats)
    return stats


def handoff_receive_into(conn, store, source_url, secret_text, base_id, nova_xml,
                         paused=False):
    """Fetch a handed-off VM from ``source_url`` into nova's domain (``nova_xml``).

    Returns the engine's ``Reception``: call ``running()`` once nova has the guest running,
    or ``failed(reason)``. On failure here the source has been told and nothing is left.
    """
    from cloudlet_compute.handoff import destination, wire
    placement = placement_for_nova(nova_xml)
    channel = wire.connect(source_url, placement.uuid, wire.parse_secret(secret_text))
    reception = destination.receive(conn, store, channel, placement, paused=paused,
                                    require_base=base_id)
    try:
        _finish_restore(conn, placement, nova_xml)
    except BaseException as exc:
        reception.failed(exc)
        raise
    LOG.info("received %s from %s: %s", placement.name, source_url, reception.stats)
    return reception
