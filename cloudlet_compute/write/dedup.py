"""Dedup stage: find, for every changed chunk, the cheapest place its bytes already exist.

In order: a chunk of zeros; a page of the base memory image; a chunk of the base disk;
an earlier chunk of this overlay (memory first, so memory holds the canonical copy);
otherwise the chunk's own bytes. Matching is by SHA-256 of the plaintext.
"""

import hashlib

from cloudlet_compute.format.records import (CHUNK_SIZE, SOURCE_BASE_DISK, SOURCE_BASE_MEM,
                                             SOURCE_RAW, SOURCE_SELF, SOURCE_ZERO, TARGET_DISK,
                                             TARGET_MEMORY, ZERO_CHUNK, ZERO_DIGEST)


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
    disk_digests = base.disk_digests()
    disk = {}
    for i in range(len(disk_digests) // 32):
        digest = disk_digests[32 * i:32 * i + 32]
        if digest != ZERO_DIGEST:
            disk.setdefault(digest, i * CHUNK_SIZE)
    return memory, disk


class BaseMatcher:
    """Where a chunk's bytes already are without this overlay: zeros, the base memory, the
    base disk. Serves the overlay's dedup and the handoff encoder alike."""

    def __init__(self, base):
        self.memory_index, self.disk_index = base_indexes(base)

    def classify(self, data):
        """``(digest, source, ref)`` of chunk ``data`` (None: zeros): source is SOURCE_ZERO,
        SOURCE_BASE_MEM or SOURCE_BASE_DISK with its base offset, or None for new bytes."""
        if data is None or data == ZERO_CHUNK:
            return ZERO_DIGEST, SOURCE_ZERO, None
        digest = hashlib.sha256(data).digest()
        offset = self.memory_index.get(digest)
        if offset is not None:
            return digest, SOURCE_BASE_MEM, offset
        offset = self.disk_index.get(digest)
        if offset is not None:
            return digest, SOURCE_BASE_DISK, offset
        return digest, None, None


def dedup(memory_changed, disk_changed, base):
    """Return the changed chunks (memory first) as ``Chunk`` objects with their sources."""
    matcher = BaseMatcher(base)
    pivots = {}
    chunks = [Chunk(TARGET_MEMORY, i, d) for i, d in memory_changed]
    chunks += [Chunk(TARGET_DISK, i, d) for i, d in disk_changed]
    for chunk in chunks:
        digest, source, ref = matcher.classify(chunk.data)
        if source is not None:
            chunk.source, chunk.ref = source, ref
        elif digest in pivots:
            chunk.source, chunk.ref = SOURCE_SELF, pivots[digest]
        else:
            pivots[digest] = chunk
    return chunks
