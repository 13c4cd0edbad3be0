"""Pack stage: deduplicated chunks -> records -> compressed blobs -> overlay package.

A literal chunk and every later chunk that repeats it go into the same blob (the repeats
right after it), so each blob decodes on its own. Blobs close at ``BLOB_TARGET`` bytes of
plaintext: small enough to fetch, decompress and apply in a pipeline, large enough to
compress well (see ``doc/overlay-format.md``). Blobs are compressed on a thread pool
(the codecs release the GIL).
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


def _ordered(chunks):
    """Yield chunks with the repeats of each literal right after it."""
    repeats = collections.defaultdict(list)
    for chunk in chunks:
        if chunk.source == SOURCE_SELF:
            repeats[id(chunk.ref)].append(chunk)
    for chunk in chunks:
        if chunk.source == SOURCE_SELF:
            continue
        yield chunk
        yield from repeats.get(id(chunk), ())


def build_blobs(chunks):
    """Return the plaintexts of the blobs for ``chunks``, and per-blob record counts."""
    blobs, builder, literal_at = [], BlobBuilder(), {}
    counts = collections.Counter()
    for chunk in _ordered(chunks):
        if chunk.source == SOURCE_RAW:
            if len(builder) >= BLOB_TARGET:
                blobs.append((builder, counts))
                builder, counts, literal_at = BlobBuilder(), collections.Counter(), {}
            literal_at[id(chunk)] = builder.add_raw(chunk.target, chunk.index, chunk.data)
        elif chunk.source == SOURCE_SELF:
            builder.add_self(chunk.target, chunk.index, literal_at[id(chunk.ref)])
        elif chunk.source == SOURCE_ZERO:
            builder.add_zero(chunk.target, chunk.index)
        else:
            builder.add_base(chunk.target, chunk.index, chunk.source, chunk.ref)
        counts["disk_chunks" if chunk.target == TARGET_DISK else "memory_chunks"] += 1
    if builder.records:
        blobs.append((builder, counts))
    return blobs


def source_counts(chunks):
    """Count chunks by source kind (for the meta and ``overlay info``)."""
    counts = collections.Counter(SOURCE_NAMES[c.source] for c in chunks)
    return {SOURCE_NAMES[s]: counts.get(SOURCE_NAMES[s], 0) for s in OVERLAY_SOURCES}


def write_package(path, chunks, skeleton, meta_fields, codec, level, progress):
    """Write the overlay package for ``chunks`` and ``skeleton`` to ``path``; return its meta."""
    blobs = build_blobs(chunks)
    writer = PackageWriter(path)
    try:
        skeleton_plain = skeleton.encode()
        with concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
            skeleton_future = pool.submit(blobcodec.compress, skeleton_plain, codec, level)
            futures = [pool.submit(blobcodec.compress, bytes(b.data), codec, level)
                       for b, _ in blobs]
            stored_skeleton = skeleton_future.result()
            writer.add(metamod.MEMBER_SKELETON, stored_skeleton)
            entries = []
            for i, ((builder, counts), future) in enumerate(zip(blobs, futures)):
                stored = future.result()
                name = "blob-%05d" % i
                writer.add(name, stored)
                entries.append({"member": name, "size": len(stored), "raw_size": len(builder),
                                "sha256": hashlib.sha256(stored).hexdigest(),
                                "records": builder.records,
                                "memory_chunks": counts["memory_chunks"],
                                "disk_chunks": counts["disk_chunks"]})
                progress.update(1)
        meta = dict(meta_fields)
        meta["memory"] = dict(meta["memory"], skeleton_size=len(stored_skeleton),
                              skeleton_raw_size=len(skeleton_plain),
                              skeleton_sha256=hashlib.sha256(stored_skeleton).hexdigest())
        meta["blobs"] = entries
        meta["sources"] = source_counts(chunks)
        meta["codec"] = blobcodec.NAMES[codec]
        writer.finish(meta)
        return meta
    except BaseException:
        writer.abort()
        raise
