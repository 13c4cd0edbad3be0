"""The Glance model of cloudlet base VMs and VM overlays (original-system A.7).

A base VM is four linked images: the disk (uploaded last; it names the other three in
its properties), the memory image, and the two hash lists; a base of a direct-kernel-boot
guest also has kernel and ramdisk images, which the disk names as nova's ``kernel_id`` and
``ramdisk_id``. A VM overlay is one image.
Every image carries ``is_cloudlet`` and ``cloudlet_type``; all of a base's images carry
``base_sha256_uuid``, the base id (SHA-256 of the disk content), which the compute node
sets when it uploads the data (the API creates the records before the id is known).

Records are created here, empty (status ``queued``); nova-compute uploads the data with
:func:`upload` and they become ``active``.
"""

import threading
import time

from oslo_log import log as logging
from oslo_utils import excutils

from nova import exception

LOG = logging.getLogger(__name__)

# The names of the model live in one nova-free module, shared with the clients.
from cloudlet_compute.imagemodel import (  # noqa: E402,F401
    BASE_DISK, BASE_DISK_HASH, BASE_MEMORY, BASE_MEMORY_HASH, BOOT_FORMATS, BOOT_LINKS,
    LINKED_TYPES, boot_properties,
    METADATA_HANDOFF_FROM, METADATA_HANDOFF_SECRET, METADATA_HANDOFF_SOURCE,
    METADATA_OVERLAY_IMAGE, METADATA_OVERLAY_URL, METADATA_TASK_ERROR, OVERLAY, PROPERTY_BASE_ID,
    PROPERTY_CLOUDLET, PROPERTY_TYPE,
    RESPONSE_KEYS, SUFFIXES, SYSMETA_PREFIX)


def instance_base_id(instance):
    """Return the base id of the image ``instance`` was created from, if it was a base."""
    sysmeta = instance.system_metadata or {}
    if sysmeta.get(SYSMETA_PREFIX + PROPERTY_TYPE) != BASE_DISK:
        return None
    return sysmeta.get(SYSMETA_PREFIX + PROPERTY_BASE_ID)


def base_links(instance):
    """The properties that name the base VM images ``instance`` was booted from (its disk
    image and, if known, its memory image), so an overlay of it can fetch the base."""
    links = {BASE_DISK: instance.image_ref}
    memory = (instance.system_metadata or {}).get(SYSMETA_PREFIX + BASE_MEMORY)
    if memory:
        links[BASE_MEMORY] = memory
    return links


def _properties(context, instance, image_type, extra=None):
    props = {PROPERTY_CLOUDLET: 'True', PROPERTY_TYPE: image_type,
             'image_type': 'snapshot', 'image_location': 'snapshot',
             'instance_uuid': instance.uuid, 'user_id': context.user_id}
    props.update(extra or {})
    return props


def _create(context, image_api, name, props):
    meta = {'name': name, 'disk_format': 'raw', 'container_format': 'bare',
            'visibility': 'private', 'properties': props}
    return image_api.create(context, meta)['id']


def _delete_quietly(context, image_api, image_ids):
    """Delete what can be deleted now; return the ids that Glance could not delete."""
    left = []
    for image_id in image_ids:
        try:
            image_api.delete(context, image_id)
        except exception.ImageNotFound:
            pass
        except Exception as exc:  # best effort: the original error matters more
            LOG.warning("could not delete image %s after a failure: %s", image_id, exc)
            left.append(image_id)
    return left


def create_base_records(context, image_api, instance, name):
    """Create the four empty image records of a base VM; return ``{type: image id}``.

    The disk record comes last so that it can name the other three.
    """
    ids = {}
    try:
        for image_type in LINKED_TYPES:
            ids[image_type] = _create(context, image_api, name + SUFFIXES[image_type],
                                      _properties(context, instance, image_type))
        links = {t: ids[t] for t in LINKED_TYPES}
        ids[BASE_DISK] = _create(context, image_api, name + SUFFIXES[BASE_DISK],
                                 _properties(context, instance, BASE_DISK, links))
    except Exception:
        with excutils.save_and_reraise_exception():
            _delete_quietly(context, image_api, ids.values())
    return ids


def create_overlay_record(context, image_api, instance, name):
    """Create the empty image record of a VM overlay; return its id."""
    extra = {}
    base_id = instance_base_id(instance)
    if base_id:
        extra[PROPERTY_BASE_ID] = base_id
        extra.update(base_links(instance))
    return _create(context, image_api, name, _properties(context, instance, OVERLAY, extra))


# Records Glance could not delete after a failure (Glance down) are tried again in the
# background, every RETRY_INTERVAL seconds for RETRY_FOR seconds.
RETRY_INTERVAL = 5.0
RETRY_FOR = 600.0


def delete_records(context, image_api, image_ids):
    """Delete image records (best effort), e.g. after a failed upload; those Glance cannot
    delete now are retried in a background thread."""
    left = _delete_quietly(context, image_api, image_ids)
    if left:
        threading.Thread(target=_retry_deletes, args=(context, image_api, left),
                         name='cloudlet-image-cleanup', daemon=True).start()


def _retry_deletes(context, image_api, image_ids):
    deadline = time.monotonic() + RETRY_FOR
    while image_ids and time.monotonic() < deadline:
        time.sleep(RETRY_INTERVAL)
        image_ids = _delete_quietly(context, image_api, image_ids)
    if image_ids:
        LOG.error("gave up deleting unfinished images %s", image_ids)
    else:
        LOG.info("deleted the unfinished images left by a failure")


def upload(context, image_api, image_id, path, properties=None):
    """Upload the file at ``path`` as the data of image ``image_id`` (compute side)."""
    meta = {'properties': dict(properties or {})}
    with open(path, 'rb') as data:
        return image_api.update(context, image_id, meta, data=data, purge_props=False)


def upload_base(context, image_api, image_ids, base, instance):
    """Upload base VM ``base`` (the engine's) into its records ``image_ids``: the linked
    images first, the disk last. A base that boots a kernel also gets kernel and ramdisk
    images, named by the disk as nova's ``kernel_id``/``ramdisk_id`` with its command line
    as ``os_command_line``; return their ``{type: id}``."""
    files = base.image_files()
    props = {PROPERTY_BASE_ID: base.id}
    for image_type in LINKED_TYPES:
        upload(context, image_api, image_ids[image_type], files[image_type], props)
    boot_ids = {}
    try:
        name = image_api.get(context, image_ids[BASE_DISK])['name']
        name = name[:-len(SUFFIXES[BASE_DISK])] if name.endswith(SUFFIXES[BASE_DISK]) else name
        for image_type in BOOT_LINKS:
            if image_type in files:
                meta = {'name': name + SUFFIXES[image_type], 'visibility': 'private',
                        'disk_format': BOOT_FORMATS[image_type],
                        'container_format': BOOT_FORMATS[image_type],
                        'properties': _properties(context, instance, image_type, props)}
                with open(files[image_type], 'rb') as data:
                    boot_ids[image_type] = image_api.create(context, meta, data=data)['id']
        disk_props = dict(props, **boot_properties(boot_ids, base.cmdline))
        upload(context, image_api, image_ids[BASE_DISK], files[BASE_DISK], disk_props)
    except Exception:
        with excutils.save_and_reraise_exception():
            _delete_quietly(context, image_api, boot_ids.values())
    return boot_ids
