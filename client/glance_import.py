"""Import a base package (``cloudlet base export``) into Glance as four linked images.

The one import path for every client (the CLI, the ``openstack`` plugin, Horizon). The
package is unpacked into a private temporary base store, where every hash is checked
and the hash lists are computed; then the memory image and the hash lists are uploaded,
and the disk last, naming the other three (``cloudlet_compute.imagemodel``).
"""

import logging
import math
import shutil
import tempfile
import time

from cloudlet_compute import bases, imagemodel as model
from cloudlet_compute.errors import ConflictError, FetchError
from cloudlet_compute.host import domxml

LOG = logging.getLogger(__name__)


class _ReadProgress:
    """A file whose reads are reported to ``progress``."""

    def __init__(self, path, progress):
        self._file = open(path, "rb")
        self._progress = progress

    def read(self, size=-1):
        data = self._file.read(size)
        if self._progress:
            self._progress.update(len(data))
        return data

    def close(self):
        self._file.close()


def find_base_images(conn, base_id):
    """Return the base disk images visible to ``conn`` whose base id is ``base_id``.

    Filtered here: openstacksdk drops query parameters it does not know (custom
    properties), so Glance would not filter.
    """
    return [image for image in conn.image.images()
            if image.properties.get(model.PROPERTY_TYPE) == model.BASE_DISK
            and image.properties.get(model.PROPERTY_BASE_ID) == base_id]


def _upload(conn, name, path, properties, visibility, progress):
    data = _ReadProgress(path, progress)
    try:
        image = conn.image.create_image(
            name=name, data=data, disk_format="raw", container_format="bare",
            visibility=visibility, allow_duplicates=True, **properties)
    finally:
        data.close()
    return wait_active(conn, image.id)


def wait_active(conn, image_id, timeout=600):
    """Wait until image ``image_id`` is active; raise ``FetchError`` if it fails or times out."""
    deadline = time.monotonic() + timeout
    while True:
        image = conn.image.get_image(image_id)
        if image.status == "active":
            return image
        if image.status in ("killed", "deleted", "deactivated") or time.monotonic() > deadline:
            raise FetchError("image %s is %s, not active" % (image_id, image.status))
        time.sleep(1)


def import_base_package(conn, package_path, name=None, visibility="private",
                        progress=None, workdir=None):
    """Upload base package ``package_path`` through ``conn`` (openstacksdk); return
    ``{cloudlet_type: image id}``. Nothing is left behind on failure."""
    scratch = tempfile.mkdtemp(prefix="cloudlet-import-", dir=workdir)
    created = []
    try:
        base = bases.BaseStore(scratch).import_package(package_path, name)
        if find_base_images(conn, base.id):
            raise ConflictError("base VM %s is already in Glance" % base.id)
        name = base.name
        files = base.image_files()
        common = {model.PROPERTY_CLOUDLET: "True", model.PROPERTY_BASE_ID: base.id,
                  "image_type": "snapshot", "image_location": "snapshot"}
        ids = {}
        for image_type in model.LINKED_TYPES:
            image = _upload(conn, name + model.SUFFIXES[image_type], files[image_type],
                            dict(common, **{model.PROPERTY_TYPE: image_type}), visibility,
                            progress)
            created.append(image.id)
            ids[image_type] = image.id
        disk_props = dict(common, **{model.PROPERTY_TYPE: model.BASE_DISK})
        disk_props.update({t: ids[t] for t in model.LINKED_TYPES})
        disk = _upload(conn, name + model.SUFFIXES[model.BASE_DISK], files[model.BASE_DISK],
                       dict(disk_props, min_ram=domxml.memory_mib(base.domain_xml),
                            min_disk=math.ceil(base.disk_size / (1 << 30))),
                       visibility, progress)
        created.append(disk.id)
        ids[model.BASE_DISK] = disk.id
        LOG.info("base VM %s imported as image %s", base.id, disk.id)
        return ids
    except BaseException:
        for image_id in created:
            try:
                conn.image.delete_image(image_id)
            except Exception as exc:  # best effort: the first error matters more
                LOG.warning("could not delete image %s: %s", image_id, exc)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
