"""Delta stage: what a captured VM has that its base VM lacks, chunk by chunk.

Memory: the captured memory image is parsed; every RAM page payload is a *slot*. A slot
whose bytes equal the base's page at the same guest address (or zeros, where the base
has none) needs nothing; every other slot is a changed chunk. Everything but the
payloads becomes the skeleton.

Disk: ``qemu-img map`` names the clusters the top layer defines; each 4 KiB chunk in them
that differs from the base disk at the same offset is a changed chunk.
"""

import hashlib
import mmap
import os
from array import array

from cloudlet_compute.errors import FormatError
from cloudlet_compute.format import migstream, saveimage
from cloudlet_compute.format.records import CHUNK_SIZE, ZERO_CHUNK
from cloudlet_compute.format.skeleton import Skeleton
from cloudlet_compute.host import qemuimg


class MemoryDelta:
    """Changed memory slots ``[(slot, bytes)]``, the skeleton, and the image's SHA-256."""

    def __init__(self, changed, skeleton, image_sha256, header):
        self.changed, self.skeleton = changed, skeleton
        self.image_sha256, self.header = image_sha256, header


def memory_delta(image_path, base):
    """Compare the memory image at ``image_path`` with ``base``'s; return a MemoryDelta."""
    blocks, keys, offsets, _digests = base.memory_pages()
    with open(image_path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as buf, \
            open(base.memory_path, "rb") as bf, \
            mmap.mmap(bf.fileno(), 0, prot=mmap.PROT_READ) as base_buf:
        header = saveimage.SaveHeader.parse(buf)
        layout = migstream.parse(buf, header.stream_offset)
        block_map = [blocks.index(name) if name in blocks else -1
                     for name in layout.block_names()]
        base_at = dict(zip(keys, offsets))
        positions, defaults = array("Q"), array("q")
        changed, pieces, prev = [], [], 0
        low = (1 << 48) - 1
        for slot, (pos, key) in enumerate(zip(layout.payload_offsets, layout.page_keys)):
            base_block = block_map[key >> 48]
            default = base_at.get(base_block << 48 | key & low, -1) if base_block >= 0 else -1
            page = buf[pos:pos + CHUNK_SIZE]
            same = base_buf[default:default + CHUNK_SIZE] if default >= 0 else ZERO_CHUNK
            if page != same:
                changed.append((slot, page))
            pieces.append(buf[prev:pos])
            positions.append(pos - CHUNK_SIZE * slot)
            defaults.append(default)
            prev = pos + CHUNK_SIZE
        pieces.append(buf[prev:])
        image_sha256 = hashlib.sha256(buf).hexdigest()
    return MemoryDelta(changed, Skeleton(positions, defaults, b"".join(pieces)),
                       image_sha256, header)


class DiskDelta:
    """Changed disk chunks ``[(chunk index, bytes)]`` and the disk content SHA-256."""

    def __init__(self, changed, content_sha256):
        self.changed, self.content_sha256 = changed, content_sha256


def content_sha256(chunk_digests):
    """The disk content hash: SHA-256 over the SHA-256 of every 4 KiB chunk, in order."""
    return hashlib.sha256(chunk_digests).hexdigest()


def disk_delta(top_path, base):
    """Compare the qcow2 ``top_path`` (backed by ``base``'s disk) with the base disk."""
    digests = bytearray(base.disk_digests())
    changed = []
    sha = hashlib.sha256
    with open(top_path, "rb") as top, open(base.disk_path, "rb") as base_disk:
        for start, length, zero, host_offset in qemuimg.allocated_extents(top_path):
            if start % CHUNK_SIZE or length % CHUNK_SIZE or start + length > base.disk_size:
                raise FormatError("disk extent %d+%d is not 4 KiB aligned or beyond the base disk"
                                  % (start, length))
            old = os.pread(base_disk.fileno(), length, start)
            if zero:
                new = bytes(length)
            elif host_offset is None:
                raise FormatError("disk extent at %d is compressed or not in the image file; "
                                  "cannot read it" % start)
            else:
                new = os.pread(top.fileno(), length, host_offset)
                if len(new) != length:
                    raise FormatError("qcow2 %s is truncated at %d" % (top_path, host_offset))
            for pos in range(0, length, CHUNK_SIZE):
                chunk = new[pos:pos + CHUNK_SIZE]
                if chunk != old[pos:pos + CHUNK_SIZE]:
                    index = (start + pos) // CHUNK_SIZE
                    changed.append((index, chunk))
                    digests[32 * index:32 * index + 32] = sha(chunk).digest()
    return DiskDelta(changed, content_sha256(bytes(digests)))
