"""The customized disk's 4 KiB windows at 512-byte steps around its changed chunks.

A file whose blocks are not 4 KiB-aligned on the disk (ext4 with 1 KiB blocks, a partition
at sector 63) is in guest memory (page cache, tmpfs) as pages that equal no disk chunk but
a 4 KiB window of the disk at a 512-byte offset. Where the customization wrote such a file,
the windows overlap changed chunks: every window that is not 4 KiB-aligned and overlaps a
changed chunk is indexed (7 a changed chunk, and 7 more before a run of them), its bytes
taken from the changed chunks and the base disk around them. Work and memory follow the
disk delta: 7 hashes and 16 bytes a window (the digests are spilled to ``workdir``).
"""

import hashlib
import os
from array import array

from cloudlet_compute.format.records import CHUNK_SIZE, SECTOR, ZERO_DIGEST
from cloudlet_compute.write.digestindex import DigestIndex

STEPS = range(SECTOR, CHUNK_SIZE, SECTOR)


class DiskWindows:
    """``find(digest)``: the byte offset of a window of the customized disk with these
    bytes, or None. ``count`` windows are indexed."""

    def __init__(self, disk_changed, base, workdir):
        self.offsets = array("Q")
        path = os.path.join(workdir, "disk-windows")
        with open(path, "wb") as out, open(base.disk_path, "rb") as base_disk:
            def base_chunk(index):
                return os.pread(base_disk.fileno(), CHUNK_SIZE, index * CHUNK_SIZE)

            def add_pair(left_index, pair):
                at = left_index * CHUNK_SIZE
                with memoryview(pair) as view:
                    for step in STEPS:
                        digest = hashlib.sha256(view[step:step + CHUNK_SIZE]).digest()
                        if digest != ZERO_DIGEST:
                            out.write(digest)
                            self.offsets.append(at + step)

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
        self.count = len(self.offsets)
        self._index = DigestIndex.of_file(path) if self.count else None

    def find(self, digest):
        if self._index is None:
            return None
        window = self._index.find(digest)
        return None if window is None else self.offsets[window]
