"""Overlay records: the plaintext inside a blob (format: ``doc/overlay-format.md``).

A blob's plaintext is a sequence of records, each a 9-byte header then a payload::

    u8  kind      high nibble = target (0x1 memory slot, 0x2 disk chunk)
                  low nibble  = source (see SOURCE_* below)
    u64 target    memory: slot index in the skeleton; disk: chunk index (offset / 4096)
    payload       RAW: 4096 bytes | ZERO: none | BASE_MEM, BASE_DISK, OVERLAY_DISK: u64
                  byte offset in the base memory image / base disk / the customized
                  disk (version 2, memory targets only) | SELF: u32 offset, in this
                  blob's plaintext, of the payload of an earlier RAW record | PRIOR (handoff
                  stream only, never in an overlay): u8 target, u64 index of a chunk the
                  receiver already holds

All integers are little-endian. A SELF record always points inside its own blob, so every
blob can be decoded on its own, in any order.
"""

import hashlib
import struct

from cloudlet_compute.errors import FormatError

# The one definition of the chunk (memory page / disk block) size and of an all-zero chunk;
# every other engine module imports them from here.
CHUNK_SIZE = 4096
ZERO_CHUNK = bytes(CHUNK_SIZE)
ZERO_DIGEST = hashlib.sha256(ZERO_CHUNK).digest()

TARGET_MEMORY = 0x10
TARGET_DISK = 0x20
TARGETS = (TARGET_MEMORY, TARGET_DISK)

SOURCE_RAW = 0
SOURCE_ZERO = 1
SOURCE_BASE_MEM = 2
SOURCE_BASE_DISK = 3
SOURCE_SELF = 4
SOURCE_PRIOR = 5
SOURCE_OVERLAY_DISK = 6
SOURCE_NAMES = {SOURCE_RAW: "raw", SOURCE_ZERO: "zero", SOURCE_BASE_MEM: "base_memory",
                SOURCE_BASE_DISK: "base_disk", SOURCE_SELF: "self", SOURCE_PRIOR: "prior",
                SOURCE_OVERLAY_DISK: "overlay_disk"}
OVERLAY_SOURCES = (SOURCE_RAW, SOURCE_ZERO, SOURCE_BASE_MEM, SOURCE_BASE_DISK, SOURCE_SELF,
                   SOURCE_OVERLAY_DISK)
COPY_SOURCES = (SOURCE_BASE_MEM, SOURCE_BASE_DISK, SOURCE_OVERLAY_DISK)
SECTOR = 512            # alignment of a reference into a disk

HEADER = struct.Struct("<BQ")
PRIOR = struct.Struct("<BQ")
U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")


class BlobBuilder:
    """Accumulates records for one blob; knows where each literal payload landed."""

    def __init__(self):
        self.data = bytearray()
        self.records = 0

    def __len__(self):
        return len(self.data)

    def add_raw(self, target, index, payload):
        """Append a literal chunk; return the offset of its payload (for SELF records)."""
        if len(payload) != CHUNK_SIZE:
            raise ValueError("a raw chunk is %d bytes, not %d" % (CHUNK_SIZE, len(payload)))
        self.data += HEADER.pack(target | SOURCE_RAW, index)
        offset = len(self.data)
        self.data += payload
        self.records += 1
        return offset

    def add_zero(self, target, index):
        """Append a chunk of zeros."""
        self.data += HEADER.pack(target | SOURCE_ZERO, index)
        self.records += 1

    def add_copy(self, target, index, source, offset):
        """Append a chunk copied from the base memory image, the base disk or the customized
        disk (``COPY_SOURCES``) at byte ``offset``."""
        if source not in COPY_SOURCES:
            raise ValueError("not a copy source: %r" % source)
        self.data += HEADER.pack(target | source, index) + U64.pack(offset)
        self.records += 1

    def add_prior(self, target, index, ref_target, ref_index):
        """Append a copy of chunk ``ref_index`` of ``ref_target`` as the receiver holds it
        (handoff streams only)."""
        self.data += HEADER.pack(target | SOURCE_PRIOR, index) + PRIOR.pack(ref_target, ref_index)
        self.records += 1

    def add_self(self, target, index, payload_offset):
        """Append a repeat of the literal whose payload is at ``payload_offset``."""
        self.data += HEADER.pack(target | SOURCE_SELF, index) + U32.pack(payload_offset)
        self.records += 1


def check_disk_offset(offset, disk_size, where, disk):
    """Refuse a reference to ``disk`` (its name, for the message) at byte ``offset`` that is
    not 512-byte aligned or whose chunk runs past the disk's ``disk_size`` bytes."""
    if offset % SECTOR or offset + CHUNK_SIZE > disk_size:
        raise FormatError("%s refers to %s offset %d, unaligned or beyond the %d-byte disk"
                          % (where, disk, offset, disk_size))


def iter_records(plain):
    """Yield ``(target, index, source, value)`` for each record of a blob's plaintext.

    ``value`` is a memoryview of the 4096 chunk bytes for RAW and SELF, the byte offset
    for BASE_MEM, BASE_DISK and OVERLAY_DISK, None for ZERO and ``(target, index)`` for PRIOR.
    Structure is checked here (lengths, kinds, SELF pointing at an earlier literal);
    ranges of targets and base offsets are checked by the stage that knows the images.
    """
    view = memoryview(plain)
    literals = set()
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < HEADER.size:
            raise FormatError("record header truncated: expected %d bytes at offset %d, got %d"
                              % (HEADER.size, pos, end - pos))
        kind, index = HEADER.unpack_from(view, pos)
        target, source = kind & 0xF0, kind & 0x0F
        if target not in TARGETS or source not in SOURCE_NAMES:
            raise FormatError("unknown record kind 0x%02x at offset %d" % (kind, pos))
        pos += HEADER.size
        if source == SOURCE_RAW:
            if end - pos < CHUNK_SIZE:
                raise FormatError("raw record truncated: expected %d bytes at offset %d, got %d"
                                  % (CHUNK_SIZE, pos, end - pos))
            literals.add(pos)
            value = view[pos:pos + CHUNK_SIZE]
            pos += CHUNK_SIZE
        elif source == SOURCE_ZERO:
            value = None
        elif source == SOURCE_SELF:
            if end - pos < U32.size:
                raise FormatError("self record truncated at offset %d" % pos)
            (ref,) = U32.unpack_from(view, pos)
            if ref not in literals:
                raise FormatError("self record at offset %d points at %d, which is not an "
                                  "earlier literal of this blob" % (pos - HEADER.size, ref))
            value = view[ref:ref + CHUNK_SIZE]
            pos += U32.size
        elif source == SOURCE_PRIOR:
            if end - pos < PRIOR.size:
                raise FormatError("prior record truncated at offset %d" % pos)
            value = PRIOR.unpack_from(view, pos)
            if value[0] not in TARGETS:
                raise FormatError("prior record at offset %d names target 0x%02x"
                                  % (pos - HEADER.size, value[0]))
            pos += PRIOR.size
        else:
            if end - pos < U64.size:
                raise FormatError("copy record truncated at offset %d" % pos)
            (value,) = U64.unpack_from(view, pos)
            pos += U64.size
        yield target, index, source, value


class Resolver:
    """What a record's ``(source, value)`` stands for, against one base VM: the one rule
    for overlay apply (``read.apply``) and handoff reassembly (``handoff.destination``).

    ``base_mem`` is the base memory image (a buffer); ``check_base_offset(offset, where)``
    raises ``FormatError`` for a BASE_MEM offset the caller does not accept; ``base_disk``
    reads base disk chunks (``read(offset, where)``, which checks its own bounds);
    ``prior(value, where)`` resolves PRIOR records (None: not allowed, as in an overlay);
    ``overlay_disk(value, where)`` OVERLAY_DISK records (None: not allowed, as in a handoff
    stream).
    """

    def __init__(self, base_mem, check_base_offset, base_disk, prior=None, overlay_disk=None):
        self.base_mem, self.base_disk = base_mem, base_disk
        self._check_base_offset, self._prior = check_base_offset, prior
        self._overlay_disk = overlay_disk

    def resolve(self, source, value, where):
        """The record's chunk in short form: bytes, None for zeros, or the int offset of a
        base memory page (``chunk`` gives the bytes of any of them)."""
        if source in (SOURCE_RAW, SOURCE_SELF):
            return bytes(value)
        if source == SOURCE_ZERO:
            return None
        if source == SOURCE_PRIOR:
            if self._prior is None:
                raise FormatError("%s is a handoff-stream record, not valid in an overlay"
                                  % where)
            return self._prior(value, where)
        if source == SOURCE_OVERLAY_DISK:
            if self._overlay_disk is None:
                raise FormatError("%s is an overlay record, not valid in a handoff stream"
                                  % where)
            return self._overlay_disk(value, where)
        if source == SOURCE_BASE_MEM:
            self._check_base_offset(value, where)
            return value
        return self.base_disk.read(value, where)

    def chunk(self, data):
        """The 4096 bytes that short form ``data`` stands for."""
        if data is None:
            return ZERO_CHUNK
        if isinstance(data, int):
            return self.base_mem[data:data + CHUNK_SIZE]
        return data
