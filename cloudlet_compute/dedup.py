"""Dedup stage: find, for every changed chunk, the cheapest place its bytes already exist.

In order: a chunk of zeros; a page of the base memory image; a chunk of the base disk;
an earlier chunk of this overlay (memory first, so memory holds the canonical copy);
otherwise the chunk's own bytes. Matching is by SHA-256 of the plaintext.
"""

import hashlib

from cloudlet_compute.records import (CHUNK_SIZE, SOURCE_BASE_DISK, SOURCE_BASE_MEM, SOURCE_RAW,
                                      SOURCE_SELF, SOURCE_ZERO, TARGET_DISK, TARGET_MEMORY,
                                      ZERO_CHUNK)


class Chunk:
    """One changed chunk and where its bytes will come from.

    ``source`` is a ``records.SOURCE_*``; ``ref`` is the base offset (BASE_*) or the
    pivot ``Chunk`` (SELF).
    """

    __slots__ = ("target", "index", "data", "source", "ref")

    def __init__(self, target, index, data):
        self.target, self.index, self.data = target, index, data
        self.source, self.ref = SOURCE_RAW, None


def base_indexes(base):
    """Return ``(memory digest -> file offset, disk digest -> byte offset)`` of ``base``."""
    _blocks, _keys, offsets, digests = base.memory_pages()
    memory = {}
    for i, offset in enumerate(offsets):
        memory.setdefault(digests[32 * i:32 * i + 32], offset)
    zero = hashlib.sha256(ZERO_CHUNK).digest()
    disk_digests = base.disk_digests()
    disk = {}
    for i in range(len(disk_digests) // 32):
        digest = disk_digests[32 * i:32 * i + 32]
        if digest != zero:
            disk.setdefault(digest, i * CHUNK_SIZE)
    return memory, disk


def dedup(memory_changed, disk_changed, base):
    """Return the changed chunks (memory first) as ``Chunk`` objects with their sources."""
    memory_index, disk_index = base_indexes(base)
    pivots = {}
    chunks = [Chunk(TARGET_MEMORY, i, d) for i, d in memory_changed]
    chunks += [Chunk(TARGET_DISK, i, d) for i, d in disk_changed]
    sha = hashlib.sha256
    for chunk in chunks:
        if chunk.data == ZERO_CHUNK:
            chunk.source = SOURCE_ZERO
            continue
        digest = sha(chunk.data).digest()
        if digest in memory_index:
            chunk.source, chunk.ref = SOURCE_BASE_MEM, memory_index[digest]
        elif digest in disk_index:
            chunk.source, chunk.ref = SOURCE_BASE_DISK, disk_index[digest]
        elif digest in pivots:
            chunk.source, chunk.ref = SOURCE_SELF, pivots[digest]
        else:
            pivots[digest] = chunk
    return chunks
