"""Delta stage: what a captured VM has that its base VM lacks, chunk by chunk.

Memory: the captured memory image is parsed; every RAM page payload is a *slot*. A slot
whose bytes equal the base's page at the same guest address (or zeros, where the base
has none) needs nothing; every other slot is a changed chunk. Everything but the
payloads becomes the skeleton.

Disk: ``qemu-img map`` names the clusters the top layer defines; each 4 KiB chunk in them
that differs from the base disk at the same offset is a changed chunk.
"""

import bisect
import hashlib
import os
from array import array

from cloudlet_compute.errors import FormatError
from cloudlet_compute.format import migstream, saveimage
from cloudlet_compute.format.records import CHUNK_SIZE, ZERO_CHUNK
from cloudlet_compute.format.skeleton import Skeleton
from cloudlet_compute.host import qemuimg
from cloudlet_compute.write.spool import FileFeed, ForwardReader, Spool

PIECE = 1 << 20


class MemoryDelta:
    """Changed memory slots (a ``Spool`` of ``(slot, bytes)``), the skeleton, and the
    image's SHA-256."""

    def __init__(self, changed, skeleton, image_sha256, header):
        self.changed, self.skeleton = changed, skeleton
        self.image_sha256, self.header = image_sha256, header


class BasePages:
    """Guest address key -> file offset of the base memory image's page, as sorted arrays
    (the last record wins where a key was sent twice)."""

    def __init__(self, base):
        blocks, keys, offsets, _ = base.memory_pages(digests=False)
        self.blocks = blocks
        if any(a >= b for a, b in zip(keys, keys[1:])):
            order = sorted(range(len(keys)), key=keys.__getitem__)
            keys = array("Q", (keys[i] for i in order))
            offsets = array("Q", (offsets[i] for i in order))
        self.keys, self.offsets = keys, offsets

    def offset(self, key):
        """The base's file offset for ``key``, or -1 if the base has no such page."""
        i = bisect.bisect_right(self.keys, key) - 1
        return self.offsets[i] if i >= 0 and self.keys[i] == key else -1


def memory_delta(image_path, base, workdir):
    """Compare the memory image at ``image_path`` with ``base``'s; return a MemoryDelta.

    Both images are read forward once, a window at a time; changed pages go to a spool
    in ``workdir``.
    """
    lookup = BasePages(base)
    sha = hashlib.sha256()
    changed = Spool(workdir)
    with open(image_path, "rb") as f, open(base.memory_path, "rb") as bf:
        feed, base_pages = FileFeed(f.fileno(), sha), ForwardReader(bf.fileno(), forget=True)
        if feed.fill(saveimage.HEADER.size):
            feed.fill(saveimage.HEADER.size + saveimage.HEADER.unpack_from(feed.buf)[2])
        header = saveimage.SaveHeader.parse(feed.tail(0))
        positions, defaults, skeleton = array("Q"), array("q"), bytearray()
        buf, prev, low, slot = feed.buf, 0, (1 << 48) - 1, 0
        base_offset, read_base = lookup.offset, base_pages.read
        for event in migstream.walk(feed, header.stream_offset):
            if event[0] != "page":
                if event[0] == "setup":
                    block_map = [lookup.blocks.index(name) << 48 if name in lookup.blocks
                                 else -1 for name, _ in event[1]]
                else:
                    ram_end = event[1]
                continue
            _, key, pos = event
            if pos < 0:
                continue
            base_block = block_map[key >> 48]
            default = base_offset(base_block | key & low) if base_block >= 0 else -1
            origin = feed.origin
            rel = pos - origin
            page = buf[rel:rel + CHUNK_SIZE]
            if page != (read_base(default) if default >= 0 else ZERO_CHUNK):
                changed.add(slot, page)
            skeleton += buf[prev - origin:rel]
            positions.append(pos - CHUNK_SIZE * slot)
            defaults.append(default)
            prev = feed.keep = pos + CHUNK_SIZE
            slot += 1
        feed.finish()
        tail = feed.tail(prev)
        migstream.check_end(tail, ram_end - prev)
        skeleton += tail
    return MemoryDelta(changed, Skeleton(positions, defaults, bytes(skeleton)),
                       sha.hexdigest(), header)


class DiskDelta:
    """Changed disk chunks (a ``Spool`` of ``(chunk index, bytes)``) and the disk content
    SHA-256."""

    def __init__(self, changed, content_sha256):
        self.changed, self.content_sha256 = changed, content_sha256


def content_sha256(chunk_digests):
    """The disk content hash: SHA-256 over the SHA-256 of every 4 KiB chunk, in order."""
    return hashlib.sha256(chunk_digests).hexdigest()


def patched_content_sha256(base, indexes, digests):
    """The content hash of ``base``'s disk with chunk ``indexes[k]`` (ascending) changed to
    one of digest ``digests[32k:32k+32]``, reading the base's chunk digests forward."""
    whole, at = hashlib.sha256(), 0
    with open(base.disk_digests_path, "rb") as f:
        def copy(n):
            while n > 0:
                piece = f.read(min(n, PIECE))
                if not piece:
                    return
                whole.update(piece)
                n -= len(piece)
        for k, index in enumerate(indexes):
            copy(32 * (index - at))
            f.seek(32, os.SEEK_CUR)
            whole.update(digests[32 * k:32 * k + 32])
            at = index + 1
        copy(float("inf"))
    return whole.hexdigest()


def disk_delta(top_path, base, workdir):
    """Compare the qcow2 ``top_path`` (backed by ``base``'s disk) with the base disk, a
    slice at a time; changed chunks go to a spool in ``workdir``."""
    changed, digests, end = Spool(workdir), bytearray(), 0
    sha = hashlib.sha256
    with open(top_path, "rb") as top, open(base.disk_path, "rb") as base_disk:
        for start, length, zero, host_offset in qemuimg.allocated_extents(top_path):
            if start % CHUNK_SIZE or length % CHUNK_SIZE or start + length > base.disk_size:
                raise FormatError("disk extent %d+%d is not 4 KiB aligned or beyond the base disk"
                                  % (start, length))
            if start < end:
                raise FormatError("disk extent at %d overlaps the one before" % start)
            if not zero and host_offset is None:
                raise FormatError("disk extent at %d is compressed or not in the image file; "
                                  "cannot read it" % start)
            end = start + length
            for at in range(0, length, PIECE):
                n = min(PIECE, length - at)
                old = os.pread(base_disk.fileno(), n, start + at)
                new = bytes(n) if zero else os.pread(top.fileno(), n, host_offset + at)
                if len(new) != n:
                    raise FormatError("qcow2 %s is truncated at %d" % (top_path, host_offset))
                if new == old:
                    continue
                for pos in range(0, n, CHUNK_SIZE):
                    chunk = new[pos:pos + CHUNK_SIZE]
                    if chunk != old[pos:pos + CHUNK_SIZE]:
                        changed.add((start + at + pos) // CHUNK_SIZE, chunk)
                        digests += sha(chunk).digest()
    return DiskDelta(changed, patched_content_sha256(base, changed.indexes, digests))
