"""VM overlay creation: capture -> delta -> dedup -> pack (reading one: ``read.overlayinfo``)."""

import logging
import os
import shutil
import time

from cloudlet_compute import __version__
from cloudlet_compute.errors import ConflictError
from cloudlet_compute.format import blobcodec, meta as metamod
from cloudlet_compute.host import domxml
from cloudlet_compute.progress import NullProgress
from cloudlet_compute.write import capture, dedup, delta, pack

LOG = logging.getLogger(__name__)


def meta_fields(base, mem, disk):
    """The meta of an overlay of ``mem`` and ``disk`` (delta stage results) against ``base``,
    before packing adds the skeleton, blob and source entries."""
    return {
        "format": metamod.FORMAT, "version": metamod.FORMAT_VERSION,
        "base_vm_sha256": base.id, "base_memory_sha256": base.memory_sha256,
        "chunk_size": metamod.CHUNK_SIZE, "created_by": "openstackpp %s" % __version__,
        "memory": {"image_size": mem.skeleton.image_size, "image_sha256": mem.image_sha256,
                   "slots": mem.skeleton.slots, "changed": len(mem.changed)},
        "disk": {"size": base.disk_size, "content_sha256": disk.content_sha256,
                 "changed": len(disk.changed)},
    }


def create(conn, store, domain_name, out_path, codec=blobcodec.DEFAULT_CODEC, level=None,
           progress_factory=NullProgress, unaligned=True):
    """Build the overlay of running domain ``domain_name`` at ``out_path``.

    The domain keeps running (it is paused while its state is captured). Returns
    ``(meta, timings)``; timings are seconds per phase. ``unaligned``: as for ``dedup.dedup``.
    """
    timings = {}
    t0 = time.monotonic()
    src = capture.source(conn, domain_name)     # refused here, before anything is touched
    base_id = domxml.base_id_of(src.xml)
    if base_id is None or src.disk_format != "qcow2":
        raise ConflictError("domain %s was not resumed from a base VM (no cloudlet "
                            "metadata, or its disk is not a qcow2 over the base)" % domain_name)
    base = store.get(base_id)
    work = store.scratch("overlay-")
    try:
        cap = capture.capture(conn, domain_name, work)
        t1 = time.monotonic()
        timings["capture"], timings["downtime"] = t1 - t0, cap.downtime
        mem = delta.memory_delta(cap.memory_path, base, work)
        os.unlink(cap.memory_path)
        disk = delta.disk_delta(cap.disk_path, base, work)
        t2 = time.monotonic()
        timings["delta"] = t2 - t1
        chunks = dedup.dedup(mem.changed, disk.changed, base, unaligned)
        t3 = time.monotonic()
        timings["dedup"] = t3 - t2
        fields = meta_fields(base, mem, disk)
        progress = progress_factory("packing", None, "blobs")
        meta = pack.write_package(out_path, chunks, mem.skeleton, fields, codec, level, progress)
        progress.finish()
        timings["pack"] = time.monotonic() - t3
        timings["total"] = time.monotonic() - t0
        LOG.info("overlay of %s written to %s in %.2f s", domain_name, out_path, timings["total"])
        return meta, timings
    finally:
        shutil.rmtree(work, ignore_errors=True)

