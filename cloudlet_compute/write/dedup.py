"""Dedup stage: find, for every changed chunk, the cheapest place its bytes already exist.

In order: a chunk of zeros; a page of the base memory image; a chunk of the base disk;
for a memory page, a 4 KiB window of the customized disk at a 512-byte offset
(``diskwindows``); an earlier chunk of this overlay (memory first, so memory holds the
canonical copy); otherwise the chunk's own bytes. Matching is by SHA-256 of the plaintext.
"""

import hashlib
import itertools
from array import array

from cloudlet_compute.format.records import (CHUNK_SIZE, SOURCE_BASE_DISK, SOURCE_BASE_MEM,
                                             SOURCE_OVERLAY_DISK, SOURCE_RAW, SOURCE_SELF,
                                             SOURCE_ZERO, TARGET_DISK, TARGET_MEMORY,
                                             ZERO_CHUNK, ZERO_DIGEST)
from cloudlet_compute.write.diskwindows import DiskWindows
from cloudlet_compute.write.digestindex import DigestIndex


class Chunks:
    """The changed chunks, memory then disk, numbered 0.. in that order, and their sources.

    ``memory`` and ``disk`` are the delta stage's spools; ``sources[i]`` is a
    ``records.SOURCE_*``, ``refs[i]`` the byte offset (BASE_*, OVERLAY_DISK), the number of
    the literal it repeats (SELF) or -1; ``repeats`` maps a literal's number to the numbers
    of its repeats, in order. Only numbers are kept in memory, never chunk bytes.
    """

    def __init__(self, memory, disk):
        self.memory, self.disk = memory, disk
        self.sources, self.refs, self.repeats = array("B"), array("q"), {}

    def __len__(self):
        return len(self.memory) + len(self.disk)

    def target(self, i):
        """``(target, index)`` of chunk ``i``."""
        if i < len(self.memory):
            return TARGET_MEMORY, self.memory.indexes[i]
        return TARGET_DISK, self.disk.indexes[i - len(self.memory)]

    def data(self, i):
        """The bytes of chunk ``i`` (read back from its spool)."""
        if i < len(self.memory):
            return self.memory.read(i)
        return self.disk.read(i - len(self.memory))


class BaseMatcher:
    """Where a chunk's bytes already are without this overlay: zeros, the base memory, the
    base disk. Serves the overlay's dedup and the handoff encoder alike."""

    def __init__(self, base):
        _blocks, _keys, self.memory_offsets, digests = base.memory_pages()
        self.memory_index = DigestIndex.of_bytes(digests)
        self.disk_index = DigestIndex.of_file(base.disk_digests_path, skip=ZERO_DIGEST)

    def classify(self, data):
        """``(digest, source, ref)`` of chunk ``data`` (None: zeros): source is SOURCE_ZERO,
        SOURCE_BASE_MEM or SOURCE_BASE_DISK with its base offset, or None for new bytes."""
        if data is None or data == ZERO_CHUNK:
            return ZERO_DIGEST, SOURCE_ZERO, None
        digest = hashlib.sha256(data).digest()
        page = self.memory_index.find(digest)
        if page is not None:
            return digest, SOURCE_BASE_MEM, self.memory_offsets[page]
        chunk = self.disk_index.find(digest)
        if chunk is not None:
            return digest, SOURCE_BASE_DISK, chunk * CHUNK_SIZE
        return digest, None, None


def dedup(memory_changed, disk_changed, base, unaligned=True):
    """Classify the changed chunks of two spools (memory first); return ``Chunks``.

    ``unaligned`` False leaves out the customized disk's windows at 512-byte offsets (for
    measuring what they save)."""
    matcher = BaseMatcher(base)
    windows = DiskWindows(memory_changed, disk_changed, base) if unaligned else None
    chunks, pivots = Chunks(memory_changed, disk_changed), {}
    for i, (_index, data) in enumerate(itertools.chain(memory_changed, disk_changed)):
        digest, source, ref = matcher.classify(data)
        if source is None and windows is not None and i < len(memory_changed):
            ref = windows.find(digest)
            source = None if ref is None else SOURCE_OVERLAY_DISK
        if source is None:
            pivot = pivots.get(digest)
            if pivot is None:
                pivots[digest] = i
                source, ref = SOURCE_RAW, -1
            else:
                source, ref = SOURCE_SELF, pivot
                chunks.repeats.setdefault(pivot, array("Q")).append(i)
        chunks.sources.append(source)
        chunks.refs.append(-1 if ref is None else ref)
    return chunks
