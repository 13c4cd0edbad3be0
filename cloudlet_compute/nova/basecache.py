"""Base VMs on the compute node: fetched from Glance once per base id, verified, reused.

The cache is the engine's base store under ``[cloudlet] cache_dir``; it lives on disk, so
it survives a nova-compute restart. Fetching takes a per-base lock: concurrent spawns of
one base download it once.
"""

from oslo_concurrency import lockutils
from oslo_log import log as logging

from nova import exception
from nova.image import glance as nova_glance

from cloudlet_compute.nova import glance
from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova.exception import CloudletBaseUnavailable

LOG = logging.getLogger(__name__)


class BaseCache:
    """The base VMs of one compute node."""

    def __init__(self, cache_dir, image_api=None):
        self.cache_dir = cache_dir
        self.image_api = image_api or nova_glance.API()
        self._store = None

    @property
    def store(self):
        if self._store is None:
            self._store = engine_adapter.open_store(self.cache_dir)
        return self._store

    def ensure(self, context, base_id, disk_image_id, memory_image_id, name=None):
        """Return base ``base_id``, fetching its disk and memory images from Glance if
        this host lacks it."""
        with lockutils.lock('cloudlet-base-%s' % base_id):
            base = engine_adapter.cached_base(self.store, base_id)
            if base is not None:
                return base
            if not memory_image_id:
                raise CloudletBaseUnavailable(
                    base_id=base_id, reason="image %s has no %s property"
                    % (disk_image_id, glance.BASE_MEMORY))

            def fetch(disk_path, memory_path):
                for image_id, path in ((disk_image_id, disk_path),
                                       (memory_image_id, memory_path)):
                    try:
                        self.image_api.download(context, image_id, dest_path=path)
                    except exception.ImageNotFound:
                        raise CloudletBaseUnavailable(
                            base_id=base_id, reason="image %s is gone" % image_id)

            LOG.info("fetching base VM %s from Glance (disk %s, memory %s)",
                     base_id, disk_image_id, memory_image_id)
            return engine_adapter.cache_base(self.store, base_id, name or base_id, fetch)
