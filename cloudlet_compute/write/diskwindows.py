"""Memory pages found in the customized disk at 512-byte offsets, around its changed chunks.

A file whose blocks are not 4 KiB-aligned on the disk (ext4 with 1 KiB blocks, a partition
at sector 63) is in guest memory (page cache, tmpfs) as pages that equal no disk chunk but
a 4 KiB window of the disk at a 512-byte offset. Where the customization wrote such a file,
the windows overlap changed chunks: every window that is not 4 KiB-aligned and overlaps a
changed chunk (7 a changed chunk, and 7 more before a run of them) is a candidate, its
bytes taken from the changed chunks and the base disk around them.

Hashing every window would hash 7 times the disk delta. Instead every changed memory page
leaves a *mark*: its first ``PREFIX`` bytes at a sector start (0, 512, ...) that are not
zeros (zeros are too common to tell anything), kept in one set per sector; only a window
with the same mark is hashed. Work follows the disk delta (a slice and a set lookup a
window, more where it is zeros), memory the memory delta (~100 bytes a page).
"""

import hashlib
import os

from cloudlet_compute.format.records import CHUNK_SIZE, SECTOR, ZERO_DIGEST

PREFIX = 32
STEPS = range(SECTOR, CHUNK_SIZE, SECTOR)
SECTOR_STARTS = range(0, CHUNK_SIZE, SECTOR)
ZERO_PREFIX = bytes(PREFIX)


def mark(page, at=0):
    """``(sector, bytes)``: the mark of the 4 KiB at ``at`` of ``page``, or None."""
    for sector, start in enumerate(SECTOR_STARTS):
        key = page[at + start:at + start + PREFIX]
        if key != ZERO_PREFIX:
            return sector, key
    return None


class DiskWindows:
    """``find(digest)``: the byte offset of a window of the customized disk whose bytes
    have SHA-256 ``digest`` and are marked like one of ``memory_changed``'s pages, or None."""

    def __init__(self, memory_changed, disk_changed, base):
        self.found = {}
        if not len(disk_changed):
            return
        marks = [set() for _ in SECTOR_STARTS]
        for _slot, page in memory_changed:
            page_mark = mark(page)
            if page_mark is not None:
                marks[page_mark[0]].add(page_mark[1])
        if not any(marks):
            return
        with open(base.disk_path, "rb") as base_disk:
            def base_chunk(index):
                return os.pread(base_disk.fileno(), CHUNK_SIZE, index * CHUNK_SIZE)

            def add_pair(left_index, pair):
                for step in STEPS:
                    key = pair[step:step + PREFIX]
                    if key == ZERO_PREFIX:
                        window_mark = mark(pair, step)
                        if window_mark is None or window_mark[1] not in marks[window_mark[0]]:
                            continue
                    elif key not in marks[0]:
                        continue
                    digest = hashlib.sha256(pair[step:step + CHUNK_SIZE]).digest()
                    if digest != ZERO_DIGEST:
                        self.found.setdefault(digest, left_index * CHUNK_SIZE + step)

            chunks, prev, prev_data = base.disk_size // CHUNK_SIZE, None, None
            for index, data in disk_changed:
                if prev is not None and prev + 1 == index:
                    add_pair(prev, prev_data + data)
                else:
                    if prev is not None and prev + 1 < chunks:
                        add_pair(prev, prev_data + base_chunk(prev + 1))
                    if index > 0:
                        add_pair(index - 1, base_chunk(index - 1) + data)
                prev, prev_data = index, data
            if prev is not None and prev + 1 < chunks:
                add_pair(prev, prev_data + base_chunk(prev + 1))

    def find(self, digest):
        return self.found.get(digest)
