"""VM synthesis: fetch -> unpack -> decompress -> apply -> restore.

Fetching and decompression run in a producer thread while the main thread applies
records, so network, codec and bookkeeping overlap. Nothing is left behind on failure:
the instance directory, the qemu-nbd server, the temporary download and any domain are
removed before the error propagates.
"""

import hashlib
import logging
import os
import queue
import threading
import time

from cloudlet_compute.errors import ConflictError, FormatError, IntegrityError, NotFoundError
from cloudlet_compute.format import blobcodec, meta as metamod, saveimage
from cloudlet_compute.format.package import Package
from cloudlet_compute.format.skeleton import Skeleton
from cloudlet_compute.host import domains, instances, ramfile
from cloudlet_compute.host.nbd import NBDServer
from cloudlet_compute.progress import NullProgress
from cloudlet_compute.read.apply import Rebuild
from cloudlet_compute.read.fetch import open_source

LOG = logging.getLogger(__name__)
_DONE = object()


def _check_stored(name, stored, size, sha256):
    if len(stored) != size or hashlib.sha256(stored).hexdigest() != sha256:
        raise IntegrityError("overlay member %s fails its size or sha256 check" % name)


def _produce(package, out, progress, stop):
    """Stream, verify and decompress the skeleton and every blob into ``out``."""
    meta = package.meta
    expected = {metamod.MEMBER_SKELETON: (meta["memory"]["skeleton_size"],
                                          meta["memory"]["skeleton_raw_size"],
                                          meta["memory"]["skeleton_sha256"])}
    for blob in meta["blobs"]:
        expected[blob["member"]] = (blob["size"], blob["raw_size"], blob["sha256"])
    try:
        for name, stored in package.stream_members(list(expected)):
            if stop.is_set():
                return
            size, raw_size, sha256 = expected[name]
            _check_stored(name, stored, size, sha256)
            plain = blobcodec.decompress(stored, raw_size)
            if len(plain) != raw_size:
                raise FormatError("overlay member %s holds %d bytes, its meta says %d"
                                  % (name, len(plain), raw_size))
            progress.update(len(stored))
            out.put((name, plain))
        out.put(_DONE)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        out.put(exc)


def read_overlay(package, base, progress):
    """Fetch, check, decompress and take in every record of ``package`` against ``base``.

    Returns the ``Rebuild`` holding the skeleton and the chunks (caller closes it).
    """
    rebuild = Rebuild(base, package.meta)
    try:
        _consume(package, base, rebuild, progress)
    except BaseException:
        rebuild.close()
        raise
    return rebuild


def _consume(package, base, rebuild, progress):
    out, stop = queue.Queue(maxsize=4), threading.Event()
    producer = threading.Thread(target=_produce, args=(package, out, progress, stop), daemon=True)
    producer.start()
    blobs = {b["member"]: b for b in package.meta["blobs"]}
    try:
        while True:
            item = out.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            name, plain = item
            if name == metamod.MEMBER_SKELETON:
                rebuild.skeleton = Skeleton.decode(plain, base.memory_size)
                if rebuild.skeleton.slots != package.meta["memory"]["slots"]:
                    raise FormatError("skeleton has %d slots, the meta says %d"
                                      % (rebuild.skeleton.slots, package.meta["memory"]["slots"]))
            elif rebuild.skeleton is None:
                raise FormatError("blob %s comes before the memory skeleton" % name)
            elif rebuild.apply_blob(name, plain) != blobs[name]["records"]:
                raise FormatError("blob %s holds another number of records than its meta says"
                                  % name)
    finally:
        stop.set()
        while producer.is_alive():
            try:
                out.get(timeout=0.1)
            except queue.Empty:
                pass
        producer.join()


def synthesize(conn, store, location, placement, progress_factory=NullProgress,
               require_base=None, paused=False, policy=None):
    """Rebuild the VM of the overlay at ``location`` and start it at ``placement``.

    ``require_base``, if given, is the only base id the overlay may use (and bounds what is
    fetched: ``BaseVM.overlay_size_bound``); ``paused`` leaves the domain paused after the
    restore; ``policy`` (a ``fetchpolicy.FetchPolicy``) vets an http(s) location. Returns
    timings.
    """
    t0 = time.monotonic()
    timings = {}
    domains.ensure_free(conn, placement.name)
    if placement.exists():
        raise ConflictError("%s is already in use" % placement.path)
    fetch_progress = progress_factory("fetching", None)
    max_bytes = store.get(require_base).overlay_size_bound() if require_base else None
    source, temp = open_source(location, store.tmp_dir, fetch_progress, policy=policy,
                               max_bytes=max_bytes)
    created = False
    try:
        package = Package(source)
        meta = package.meta
        if require_base and meta["base_vm_sha256"] != require_base:
            raise IntegrityError("overlay is for base VM %s, not %s"
                                 % (meta["base_vm_sha256"], require_base))
        try:
            base = store.get(meta["base_vm_sha256"])
        except NotFoundError:
            raise NotFoundError("overlay needs base VM %s, which is not registered here; "
                                "import it first" % meta["base_vm_sha256"]) from None
        metamod.check_against_base(meta, base)
        fetch_progress.total = sum(b["size"] for b in meta["blobs"]) + \
            meta["memory"]["skeleton_size"]
        timings["meta"] = time.monotonic() - t0
        placement.create(base)
        created = True
        rebuild = read_overlay(package, base, fetch_progress)
        try:
            fetch_progress.finish()
            timings["fetch_apply"] = time.monotonic() - t0 - timings["meta"]
            t1 = time.monotonic()
            with NBDServer(placement.disk_path, "qcow2",
                           os.path.join(placement.path, "nbd.sock")) as server:
                client = server.connect()
                try:
                    rebuild.write_disk(client)
                finally:
                    client.close()
            timings["disk"] = time.monotonic() - t1
            t2 = time.monotonic()
            # The skeleton starts with the image's libvirt header: the new domain gets its
            # own header. Over the base's RAM file only the changed pages are streamed;
            # else the whole image is, hashed and checked before restore.
            header = saveimage.SaveHeader.parse(rebuild.skeleton.data)
            start = header.stream_offset
            path, why = instances.restore(
                conn, placement, base, header, rebuild.ram_block_size(start, ramfile.RAM_BLOCK),
                lambda ram: rebuild.delta_stream(start, ramfile.RAM_BLOCK),
                lambda: rebuild.memory_stream(start), paused)
            timings["memory_restore"] = time.monotonic() - t2
            timings["restore_path"] = path
            if why:
                timings["restore_why"] = why
        finally:
            rebuild.close()
    except BaseException:
        if created:
            placement.discard()
        raise
    finally:
        source.close()
        if temp:
            os.unlink(temp)
    timings["total"] = time.monotonic() - t0
    LOG.info("synthesized %s from %s in %.2f s", placement.name, location, timings["total"])
    return timings
