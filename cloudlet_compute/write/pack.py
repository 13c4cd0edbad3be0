"""Pack stage: deduplicated chunks -> records -> compressed blobs -> overlay package.

A literal chunk and every later chunk that repeats it go into the same blob (the repeats
right after it), so each blob decodes on its own. Blobs close at ``BLOB_TARGET`` bytes of
plaintext: small enough to fetch, decompress and apply in a pipeline, large enough to
compress well (see ``doc/overlay-format.md``). Blobs are built one at a time, reading
literals back from the delta spools, and compressed on a thread pool (the codecs release
the GIL) with at most ``IN_FLIGHT`` per worker queued, written in order as they complete:
memory holds a few blobs, whatever the size of the overlay.
"""

import collections
import concurrent.futures
import hashlib
import os

from cloudlet_compute.format import blobcodec, meta as metamod
from cloudlet_compute.format.package import PackageWriter
from cloudlet_compute.format.records import (OVERLAY_SOURCES, SOURCE_NAMES, SOURCE_RAW,
                                             SOURCE_SELF, SOURCE_ZERO, TARGET_DISK, BlobBuilder)

BLOB_TARGET = 4 << 20
IN_FLIGHT = 2


def _ordered(chunks):
    """Yield chunk numbers with the repeats of each literal right after it."""
    sources, repeats = chunks.sources, chunks.repeats
    for i in range(len(chunks)):
        if sources[i] != SOURCE_SELF:
            yield i
            yield from repeats.get(i, ())


def build_blobs(chunks):
    """Yield ``(plaintext, records, counts)`` of each blob for ``chunks`` (``dedup.Chunks``)."""
    builder, literal_at = BlobBuilder(), {}
    counts = collections.Counter()
    for i in _ordered(chunks):
        source, ref = chunks.sources[i], chunks.refs[i]
        target, index = chunks.target(i)
        if source == SOURCE_RAW:
            if len(builder) >= BLOB_TARGET:
                yield bytes(builder.data), builder.records, counts
                builder, counts, literal_at = BlobBuilder(), collections.Counter(), {}
            literal_at[i] = builder.add_raw(target, index, chunks.data(i))
        elif source == SOURCE_SELF:
            builder.add_self(target, index, literal_at[ref])
        elif source == SOURCE_ZERO:
            builder.add_zero(target, index)
        else:
            builder.add_copy(target, index, source, ref)
        counts["disk_chunks" if target == TARGET_DISK else "memory_chunks"] += 1
    if builder.records:
        yield bytes(builder.data), builder.records, counts


def source_counts(chunks):
    """Count chunks by source kind (for the meta and ``overlay info``)."""
    counts = collections.Counter(chunks.sources)
    return {SOURCE_NAMES[s]: counts.get(s, 0) for s in OVERLAY_SOURCES}


class _Members:
    """Members compressed on ``pool`` and written in submission order, with at most
    ``limit`` compressions queued; ``done`` lists ``(name, stored size, raw size, sha256
    hex, info)`` of each member written; ``progress`` counts the blobs (info not None)."""

    def __init__(self, writer, pool, codec, level, limit, progress):
        self.writer, self.pool, self.codec, self.level = writer, pool, codec, level
        self.limit, self.progress, self.queue, self.done = limit, progress, collections.deque(), []

    def submit(self, name, plain, info=None):
        future = self.pool.submit(blobcodec.compress, plain, self.codec, self.level)
        self.queue.append((name, future, len(plain), info))
        while len(self.queue) > self.limit:
            self._write_oldest()

    def finish(self):
        while self.queue:
            self._write_oldest()

    def _write_oldest(self):
        name, future, raw_size, info = self.queue.popleft()
        stored = future.result()
        self.writer.add(name, stored)
        self.done.append((name, len(stored), raw_size, hashlib.sha256(stored).hexdigest(), info))
        if info is not None:
            self.progress.update(1)


def write_package(path, chunks, skeleton, meta_fields, codec, level, progress):
    """Write the overlay package for ``chunks`` and ``skeleton`` to ``path``; return its meta."""
    writer = PackageWriter(path)
    workers = max(1, min(4, os.cpu_count() or 1))
    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            members = _Members(writer, pool, codec, level, IN_FLIGHT * workers, progress)
            members.submit(metamod.MEMBER_SKELETON, skeleton.encode())
            for n, (plain, records, counts) in enumerate(build_blobs(chunks)):
                members.submit("blob-%05d" % n, plain, (records, counts))
            members.finish()
        (_, skeleton_size, skeleton_raw, skeleton_sha, _), *blobs = members.done
        meta = dict(meta_fields)
        meta["memory"] = dict(meta["memory"], skeleton_size=skeleton_size,
                              skeleton_raw_size=skeleton_raw, skeleton_sha256=skeleton_sha)
        meta["blobs"] = [{"member": name, "size": size, "raw_size": raw_size, "sha256": sha,
                          "records": records, "memory_chunks": counts["memory_chunks"],
                          "disk_chunks": counts["disk_chunks"]}
                         for name, size, raw_size, sha, (records, counts) in blobs]
        meta["sources"] = source_counts(chunks)
        meta["codec"] = blobcodec.NAMES[codec]
        writer.finish(meta)
        return meta
    except BaseException:
        writer.abort()
        raise
