"""Base VMs on the compute node: fetched from Glance once per base id, verified, reused,
and evicted least recently used first when the cache outgrows ``[cloudlet] base_cache_max_gb``.

The cache is the engine's base store under ``[cloudlet] cache_dir``; it lives on disk, so
it survives a nova-compute restart. Fetching takes a per-base lock: concurrent spawns of
one base download it once. The engine builds a base in ``tmp/`` and renames it into place,
so a base is complete or absent; a failed fetch leaves nothing and the next spawn retries.
nova's image pre-caching fetches a base the same way ahead of its first use (``precache``).

Eviction never removes a base that a spawn is using (``ensure`` pins it for its holder
until ``release``) or that a domain on the host uses, running or only defined. Each base
directory also holds ``nova-cache.json``: when the base was last used and the Glance disk
images it came through; the compute node's ``stats`` report both for the scheduler
(``cloudlet_compute.nova.weigher``).
"""

import contextlib
import json
import os
import threading
import time

from oslo_concurrency import lockutils
from oslo_log import log as logging
from oslo_utils import uuidutils

from nova import exception
from nova.image import glance as nova_glance

from cloudlet_compute.errors import CloudletError, ConflictError
from cloudlet_compute.nova import glance
from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova.exception import CloudletBaseUnavailable

LOG = logging.getLogger(__name__)
RECORD = 'nova-cache.json'
STAT_BASES = 'cloudlet_bases'            # compute node stats: cached base ids
STAT_IMAGES = 'cloudlet_base_images'     # ... and the Glance disk images they came from
MAX_REPORTED = 32                        # bases in the stats, most recently used first
MAX_IMAGES = 4                           # Glance disk images remembered per base
MIB = 1 << 20


class BaseCache:
    """The base VMs of one compute node.

    ``connection`` returns the host's libvirt connection (whose domains keep their bases);
    ``max_bytes`` is the quota, 0 for none.
    """

    def __init__(self, cache_dir, connection, image_api=None, max_bytes=0):
        self.cache_dir = cache_dir
        self.image_api = image_api or nova_glance.API()
        self.max_bytes = max_bytes
        self._connection = connection
        self._store = None
        self._guard = threading.Lock()          # pins and eviction decisions
        self._pins = {}                         # holder -> base id it is using

    @property
    def store(self):
        if self._store is None:
            self._store = engine_adapter.open_store(self.cache_dir)
        return self._store

    def ensure(self, context, holder, base_id, disk_image_id, memory_image_id, name=None):
        """Return base ``base_id``, fetching its disk and memory images from Glance if
        this host lacks it; the base stays pinned for ``holder`` until :meth:`release`."""
        return self._ensure(context, holder, base_id, disk_image_id, memory_image_id,
                            name)[0]

    def precache(self, context, base_id, disk_image_id, memory_image_id):
        """Fetch base ``base_id`` ahead of its first use unless this host has it (nova's
        image pre-caching); return whether it was fetched. It is pinned only while it is
        fetched, and then counts for eviction as if a spawn had used it."""
        holder = 'precache-%s' % uuidutils.generate_uuid()
        try:
            fetched = self._ensure(context, holder, base_id, disk_image_id,
                                   memory_image_id)[1]
        finally:
            self.release(holder)
        LOG.info("pre-cache of base VM %s (image %s): %s", base_id, disk_image_id,
                 "fetched from Glance" if fetched else "already cached")
        return fetched

    def _ensure(self, context, holder, base_id, disk_image_id, memory_image_id, name=None):
        """``(base, whether it was fetched now)``, pinned for ``holder``."""
        self.pin(holder, base_id)
        try:
            with lockutils.lock('cloudlet-base-%s' % base_id):
                base = engine_adapter.cached_base(self.store, base_id)
                fetched = base is None
                if fetched:
                    base = self._fetch(context, base_id, disk_image_id, memory_image_id,
                                       name)
                self.record_use(base, disk_image_id)
                return base, fetched
        except BaseException:
            self.release(holder)
            raise

    def pin(self, holder, base_id):
        """Keep base ``base_id`` from eviction while ``holder`` uses it."""
        with self._guard:
            self._pins[holder] = base_id

    def release(self, holder):
        """The spawn ``holder`` no longer needs its base pinned (its domain, if any, now
        keeps it)."""
        with self._guard:
            self._pins.pop(holder, None)

    def _fetch(self, context, base_id, disk_image_id, memory_image_id, name):
        if not memory_image_id:
            raise CloudletBaseUnavailable(
                base_id=base_id, reason="image %s has no %s property"
                % (disk_image_id, glance.BASE_MEMORY))
        images = (disk_image_id, memory_image_id)
        with _image_gone(base_id):
            incoming = sum(self.image_api.get(context, image_id).get('size') or 0
                           for image_id in images)
        self._make_room(incoming, base_id)

        def fetch(disk_path, memory_path):
            with _image_gone(base_id):
                for image_id, path in zip(images, (disk_path, memory_path)):
                    self.image_api.download(context, image_id, dest_path=path)

        LOG.info("fetching base VM %s from Glance (disk %s, memory %s)",
                 base_id, disk_image_id, memory_image_id)
        base = engine_adapter.cache_base(self.store, base_id, name or base_id, fetch)
        self._make_room(0, base_id)     # its RAM file and indexes are known only now
        return base

    # --- use records --------------------------------------------------------------------
    def record_use(self, base, disk_image_id=None):
        """Note that ``base`` is used now (and that Glance image ``disk_image_id`` is its
        disk), written whole or not at all."""
        record = _read_record(base)
        images = [i for i in record.get('images', []) if i != disk_image_id]
        if disk_image_id:
            images.insert(0, disk_image_id)
        path = os.path.join(base.path, RECORD)
        try:
            with open(path + '.part', 'w') as f:
                json.dump({'used': time.time(), 'images': images[:MAX_IMAGES]}, f)
            os.replace(path + '.part', path)
        except OSError as exc:   # the base still works; its age is its directory's
            LOG.warning("cannot record the use of base VM %s: %s", base.id, exc.strerror)

    @staticmethod
    def _last_used(base):
        return _read_record(base).get('used') or os.stat(base.path).st_mtime

    def stats(self):
        """Compute node stats for the scheduler: the cached base ids and their Glance disk
        images, comma-separated, most recently used first ({} if the cache cannot be read)."""
        try:
            bases = sorted(self.store.list(), key=self._last_used, reverse=True)
        except (CloudletError, OSError) as exc:
            LOG.warning("cannot list the base VM cache for the scheduler: %s", exc)
            return {}
        bases = bases[:MAX_REPORTED]
        images = [i for base in bases for i in _read_record(base).get('images', [])]
        return {STAT_BASES: ','.join(base.id for base in bases),
                STAT_IMAGES: ','.join(images)}

    # --- eviction -----------------------------------------------------------------------
    def _make_room(self, incoming, keep):
        """Evict least recently used bases until the cache plus ``incoming`` bytes fits the
        quota; never ``keep``, a pinned base, or one a domain of the host uses."""
        if not self.max_bytes:
            return
        with self._guard:
            bases = self.store.list()
            total = incoming + sum(base.footprint() for base in bases)
            if total <= self.max_bytes:
                return
            try:
                conn = self._connection()
                kept = engine_adapter.bases_in_use(conn, self.store)
            except OSError as exc:
                LOG.warning("base VM cache over its quota, but which bases the domains use "
                            "cannot be told (%s): nothing evicted", exc.strerror or exc)
                return
            kept |= set(self._pins.values()) | {keep}
            for base in sorted(bases, key=self._last_used):
                if total <= self.max_bytes:
                    break
                if base.id in kept:
                    continue
                size = base.footprint()
                try:
                    engine_adapter.evict_base(self.store, base.id, conn)
                except ConflictError as exc:
                    LOG.info("base VM %s not evicted: %s", base.id, exc)
                    continue
                total -= size
                LOG.info("evicted base VM %s (%s, %d MiB) from the cache: least recently "
                         "used, not in use", base.id, base.name, size // MIB)
            if total > self.max_bytes:
                LOG.warning("base VM cache needs %d MiB, over its quota of %d MiB: the "
                            "other bases are in use", total // MIB, self.max_bytes // MIB)


def _read_record(base):
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(base.path, RECORD)) as f:
            record = json.load(f)
        if isinstance(record, dict):
            return record
    return {}


@contextlib.contextmanager
def _image_gone(base_id):
    """Glance no longer has an image of base ``base_id``: the base is unavailable."""
    try:
        yield
    except exception.ImageNotFound as exc:
        raise CloudletBaseUnavailable(
            base_id=base_id, reason="image %s is gone" % exc.kwargs.get('image_id')) from None
