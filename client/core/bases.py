"""Base VMs in Glance: four linked images (``cloudlet_compute.imagemodel``), the disk image
naming the other three (and, for a direct-kernel-boot guest, its kernel and ramdisk images by
nova's ``kernel_id``/``ramdisk_id``). List, import (a ``cloudlet base export`` package),
export, resume (a server from the base), create (``cloudlet-base`` on a running server),
delete; pre-cache on the hosts of an aggregate, and list what each host caches."""

import logging
import math
import os
import shutil
import tempfile

from client.core import lookups, waiting
from client.core.errors import api_errors, check_response
from client.core.sessions import server_action
from client.core.transfer import download_image, upload_image
from client.core.waiting import DEFAULT_TIMEOUT
from cloudlet_compute import imagemodel as model
from cloudlet_compute.bases import BaseStore
from cloudlet_compute.bootfiles import BootFiles
from cloudlet_compute.errors import ConflictError, FormatError, NotFoundError
from cloudlet_compute.host import domxml
from cloudlet_compute.progress import NullProgress

LOG = logging.getLogger(__name__)
BASE_ACTION = "cloudlet-base"
# nova's image pre-caching: POST /os-aggregates/{id}/images since this microversion.
PRECACHE_MICROVERSION = "2.81"
CACHED_BASES_PATH = "/os-cloudlet-bases"
HOST_COLUMNS = ("host", "base_id", "name")     # the rows of ``cached_bases``
# Glance refuses longer property values (os_command_line).
MAX_PROPERTY = 255


def linked_ids(image):
    """``{cloudlet_type: image id}`` of the images base disk ``image`` links."""
    props = image.properties or {}
    return {t: props.get(t) for t in model.LINKED_TYPES if props.get(t)}


def image_property(image, key):
    """Property ``key`` of ``image``: openstacksdk makes the ones it knows (``kernel_id``,
    ``ramdisk_id``, ``os_command_line``) attributes, the others ``properties``."""
    return getattr(image, key, None) or (image.properties or {}).get(key)


def links(disk):
    """``{cloudlet_type: (property, image id)}`` of every image base disk ``disk`` links:
    the three linked images, and its kernel and ramdisk if it names them."""
    found = {t: (t, image_property(disk, t)) for t in model.LINKED_TYPES}
    found.update({t: (key, image_property(disk, key)) for t, key in model.BOOT_LINKS.items()
                  if image_property(disk, key)})
    return found


def boot_image_ids(conn, disk):
    """``{cloudlet_type: image id}`` of the kernel and ramdisk images that base disk image
    ``disk`` names and that are this base's own (not images someone else uploaded)."""
    base_id, ids = (disk.properties or {}).get(model.PROPERTY_BASE_ID), {}
    for image_type, (_key, image_id) in links(disk).items():
        if image_type not in model.BOOT_LINKS:
            continue
        with api_errors():
            image = conn.image.find_image(image_id, ignore_missing=True)
        theirs = (image.properties or {}) if image is not None else {}
        if (theirs.get(model.PROPERTY_TYPE), theirs.get(model.PROPERTY_BASE_ID)) == \
                (image_type, base_id):
            ids[image_type] = image.id
    return ids


def base_row(image):
    """A base disk image as a plain dict (what the command lines print)."""
    props = image.properties or {}
    return {"id": image.id, "name": image.name, "base_id": props.get(model.PROPERTY_BASE_ID),
            "status": image.status, "size": image.size, "min_ram": image.min_ram,
            "min_disk": image.min_disk}


def list_bases(conn):
    """The base VMs (their disk images) visible to the user."""
    return [base_row(i) for i in lookups.images_of_type(conn, model.BASE_DISK)]


def import_base_package(conn, package_path, name=None, visibility="private",
                        progress=None, workdir=None):
    """Upload base package ``package_path`` as four linked images (six with a kernel and
    ramdisk); return ``{cloudlet_type: image id}``. Nothing is left behind on failure.

    The package is unpacked into a private temporary base store, which checks every hash
    and computes the hash lists; the memory image, the hash lists, kernel and ramdisk are
    uploaded first, the disk last, naming the others."""
    scratch = tempfile.mkdtemp(prefix="cloudlet-import-", dir=workdir)
    created = []
    try:
        base = BaseStore(scratch).import_package(package_path, name)
        if lookups.base_images(conn, base.id):
            raise ConflictError("base VM %s is already in Glance" % base.id)
        if base.boot_paths and len(base.cmdline or "") > MAX_PROPERTY:
            raise FormatError("the base's kernel command line has %d characters; Glance's "
                              "os_command_line holds at most %d" % (len(base.cmdline),
                                                                     MAX_PROPERTY))
        name = base.name
        files = base.image_files()
        common = {model.PROPERTY_CLOUDLET: "True", model.PROPERTY_BASE_ID: base.id,
                  "image_type": "snapshot", "image_location": "snapshot"}
        ids = {}
        for image_type in model.LINKED_TYPES + tuple(t for t in model.BOOT_LINKS if t in files):
            image = upload_image(conn, name + model.SUFFIXES[image_type], files[image_type],
                                 dict(common, **{model.PROPERTY_TYPE: image_type}), visibility,
                                 progress, model.BOOT_FORMATS.get(image_type, "raw"))
            created.append(image.id)
            ids[image_type] = image.id
        disk_props = dict(common, **{model.PROPERTY_TYPE: model.BASE_DISK})
        disk_props.update({t: ids[t] for t in model.LINKED_TYPES})
        disk_props.update(model.boot_properties(
            {t: ids[t] for t in model.BOOT_LINKS if t in ids}, base.cmdline))
        disk = upload_image(conn, name + model.SUFFIXES[model.BASE_DISK],
                            files[model.BASE_DISK],
                            dict(disk_props, min_ram=domxml.memory_mib(base.domain_xml),
                                 min_disk=math.ceil(base.disk_size / (1 << 30))),
                            visibility, progress)
        created.append(disk.id)
        ids[model.BASE_DISK] = disk.id
        LOG.info("base VM %s imported as image %s", base.id, disk.id)
        return ids
    except BaseException:
        waiting.delete_images(conn, created)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def import_base(conn, package, name, visibility="private", progress=None):
    """Upload base package ``package`` as four linked images; return ``{type: image id}``."""
    if not os.path.isfile(package):
        raise NotFoundError("base package %s does not exist" % package)
    progress = progress or NullProgress()
    with api_errors():
        ids = import_base_package(conn, package, name=name, visibility=visibility,
                                  progress=progress)
    progress.finish()
    return ids


def export_base(conn, ref, package, progress_factory=NullProgress):
    """Write the base VM of base disk image ``ref`` as a base package (``cloudlet base
    export`` format) at ``package``. The disk and memory images (and the kernel and ramdisk
    the disk image names) are downloaded into a private base store, which checks them
    against the base id, and exported from there."""
    disk = lookups.find_image(conn, ref, model.BASE_DISK)
    props = disk.properties or {}
    linked = {}
    for image_type, (key, image_id) in links(disk).items():
        with api_errors():
            image = conn.image.find_image(image_id or "", ignore_missing=True)
        if image is None or image.status != "active":
            raise NotFoundError("base VM image %s links %s %s, which is missing or not active"
                                % (disk.id, key, image_id))
        linked[image_type] = image
    scratch = tempfile.mkdtemp(prefix=".cloudlet-export-",
                               dir=os.path.dirname(os.path.abspath(package)))
    try:
        # NOTE: the hash lists are not part of a package (import recomputes them), so only
        # the disk and memory images (and kernel, ramdisk) are downloaded; the store
        # recomputes and checks.
        files = {}
        wanted = {model.BASE_DISK: disk, model.BASE_MEMORY: linked[model.BASE_MEMORY]}
        wanted.update({t: linked[t] for t in model.BOOT_LINKS if t in linked})
        for image_type, image in wanted.items():
            path = os.path.join(scratch, model.BASE_FILES.get(image_type) or
                                model.BOOT_FILES[image_type])
            progress = progress_factory("downloading", image.size)
            download_image(conn, image, path, progress)
            progress.finish()
            files[image_type] = path
        store = BaseStore(os.path.join(scratch, "store"))
        name = disk.name[:-len(model.SUFFIXES[model.BASE_DISK])] \
            if disk.name.endswith(model.SUFFIXES[model.BASE_DISK]) else disk.name
        boot = BootFiles({model.BOOT_FILES[t]: files[t] for t in model.BOOT_LINKS if t in files},
                         image_property(disk, model.PROPERTY_CMDLINE)) \
            if model.BASE_KERNEL in files else None
        base = store.add(files[model.BASE_DISK], files[model.BASE_MEMORY], name, boot=boot)
        if base.id != props.get(model.PROPERTY_BASE_ID):
            raise FormatError("image %s holds base VM %s, its %s says %s"
                              % (disk.id, base.id, model.PROPERTY_BASE_ID,
                                 props.get(model.PROPERTY_BASE_ID)))
        progress = progress_factory("exporting", base.disk_size + base.memory_size)
        store.export(base.id, package, progress)
        progress.finish()
        return {"file": package, "base_id": base.id, "name": base.name}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def create_server(conn, name, image_id, flavor_id, networks, metadata=None):
    """``POST /servers`` from base disk image ``image_id``: nova-compute restores the
    base's memory (with ``metadata.overlay_url``: synthesizes the overlay first)."""
    with api_errors():
        return conn.compute.create_server(
            name=name, image_id=image_id, flavor_id=flavor_id, networks=networks,
            **({"metadata": metadata} if metadata else {}))


def boot(conn, name, image, flavor, network, metadata, wait, timeout):
    """``create_server`` by names (``network``: see ``lookups.networks_arg``), waiting for
    ACTIVE if ``wait``; the server is deleted if this does not finish."""
    networks = lookups.networks_arg(conn, network)
    server = None
    try:
        server = create_server(conn, name, image.id, flavor.id, networks, metadata)
        if wait:
            server = waiting.wait_server_active(conn, server.id, timeout)
        return {"id": server.id, "name": name, "status": server.status, "image": image.id,
                "flavor": flavor.name}
    except BaseException:
        if server is not None:
            waiting.delete_server(conn, server.id)
        raise


def resume_base(conn, ref, name, flavor=None, network="auto", wait=False,
                timeout=DEFAULT_TIMEOUT):
    """A new server from base VM ``ref``: its memory is restored, it is not booted."""
    image = lookups.find_image(conn, ref, model.BASE_DISK)
    return boot(conn, name, image, lookups.pick_flavor(conn, image, flavor), network, None,
                wait, timeout)


def create_base(conn, server_ref, name, wait=False, timeout=DEFAULT_TIMEOUT):
    """Snapshot running server ``server_ref`` into a base VM (action ``cloudlet-base``)."""
    server = lookups.find_server(conn, server_ref)
    answer = server_action(conn, server.id, {BASE_ACTION: {"name": name}})
    if wait:
        try:
            waiting.wait_task(conn, server.id, list(answer.values()), timeout)
        except BaseException:
            waiting.delete_images(conn, answer.values())
            raise
    return answer


def delete_base(conn, image_id):
    """Delete base VM ``image_id`` (its disk image): the linked images (and its own kernel
    and ramdisk images) first, the disk image last (it names them, so a failed delete can be
    retried)."""
    with api_errors():
        disk = conn.image.get_image(image_id)
        for linked_id in list(linked_ids(disk).values()) + list(
                boot_image_ids(conn, disk).values()):
            conn.image.delete_image(linked_id, ignore_missing=True)
        conn.image.delete_image(image_id)


def cache_base(conn, ref, aggregate, listing_command):
    """Ask nova to pre-cache base VM ``ref`` on the hosts of aggregate ``aggregate`` (name
    or ID): ``POST /os-aggregates/{id}/images`` with its disk image; each nova-compute then
    fetches the whole base in the background (best effort). ``listing_command`` is how the
    user's command line shows the outcome."""
    image = lookups.find_image(conn, ref, model.BASE_DISK)
    found = lookups.find_aggregate(conn, aggregate)
    with api_errors():
        resp = conn.compute.post("/os-aggregates/%s/images" % found.id,
                                 json={"cache": [{"id": image.id}]},
                                 microversion=PRECACHE_MICROVERSION, raise_exc=False)
    check_response(resp)
    return {"base_id": (image.properties or {}).get(model.PROPERTY_BASE_ID),
            "image": image.id, "aggregate": found.name,
            "hosts": ",".join(sorted(found.hosts or ())),
            "status": "accepted: the hosts fetch it in the background; `%s` lists it once "
                      "they report it (within a minute)" % listing_command}


def cached_bases(conn):
    """What each compute host caches (``GET /os-cloudlet-bases``, admin): one row per host
    and base, most recently used first, named by its base disk image where the user sees
    one; a host that caches nothing is one row without a base."""
    with api_errors():
        resp = conn.compute.get(CACHED_BASES_PATH, raise_exc=False)
    hosts = check_response(resp).json()["hosts"]
    names = {}
    for image in lookups.images_of_type(conn, model.BASE_DISK):
        base_id = (image.properties or {}).get(model.PROPERTY_BASE_ID)
        if base_id:
            names.setdefault(base_id, image.name)
    return [{"host": host["host"], "base_id": base_id, "name": names.get(base_id)}
            for host in hosts for base_id in (host["bases"] or [None])]
