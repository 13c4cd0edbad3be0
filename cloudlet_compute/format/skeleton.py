"""The memory skeleton: a memory image with its RAM page payloads cut out.

Encoded plaintext (little-endian)::

    8s   magic  b"CLSKEL01"
    u64  slots              number of page payloads cut out
    u64  skeleton_len       bytes of the skeleton proper
    u64[slots] positions    where, in the skeleton, each payload goes (non-decreasing)
    i64[slots] defaults     byte offset in the base memory image of the page that the
                            slot holds when no record says otherwise (the base page at
                            the same guest RAM address), or -1 for a page of zeros
    skeleton_len bytes      the memory image without the payloads

Splicing payload i in at positions[i] (in order) gives back the memory image byte for
byte; the synthesizer never needs to understand QEMU's stream.
"""

import struct
from array import array

from cloudlet_compute.errors import FormatError
from cloudlet_compute.format.records import CHUNK_SIZE

MAGIC = b"CLSKEL01"
HEADER = struct.Struct("<8sQQ")


class Skeleton:
    """A parsed skeleton: ``positions``, ``defaults`` (arrays) and ``data`` (bytes)."""

    def __init__(self, positions, defaults, data):
        self.positions = positions
        self.defaults = defaults
        self.data = data

    @property
    def slots(self):
        return len(self.positions)

    @property
    def image_size(self):
        """Size of the memory image this skeleton rebuilds."""
        return len(self.data) + CHUNK_SIZE * self.slots

    def encode(self):
        """Return the encoded plaintext."""
        return b"".join((HEADER.pack(MAGIC, self.slots, len(self.data)),
                         self.positions.tobytes(), self.defaults.tobytes(), self.data))

    @classmethod
    def decode(cls, plain, base_memory_size):
        """Parse and check an encoded skeleton against the base memory image size."""
        view = memoryview(plain)
        if len(view) < HEADER.size:
            raise FormatError("skeleton truncated: expected %d header bytes, got %d"
                              % (HEADER.size, len(view)))
        magic, slots, length = HEADER.unpack_from(view, 0)
        if magic != MAGIC:
            raise FormatError("skeleton magic is %r, expected %r" % (magic, MAGIC))
        need = HEADER.size + 16 * slots + length
        if len(view) != need:
            raise FormatError("skeleton is %d bytes, its header says %d" % (len(view), need))
        pos = HEADER.size
        positions, defaults = array("Q"), array("q")
        positions.frombytes(view[pos:pos + 8 * slots])
        defaults.frombytes(view[pos + 8 * slots:pos + 16 * slots])
        data = view[pos + 16 * slots:]
        # Checked at C speed (min, max, a sort of sorted data); the loops only name the slot.
        ordered = positions.tolist()
        if slots and (ordered != sorted(ordered) or ordered[-1] > length):
            last = 0
            for i, p in enumerate(positions):
                if p < last or p > length:
                    raise FormatError("skeleton slot %d at %d is out of order or beyond %d"
                                      % (i, p, length))
                last = p
        if slots and (min(defaults) < -1 or max(defaults) + CHUNK_SIZE > base_memory_size):
            for i, d in enumerate(defaults):
                if d < -1 or d + CHUNK_SIZE > base_memory_size:
                    raise FormatError("skeleton slot %d refers to base memory offset %d, "
                                      "outside the %d-byte base memory image"
                                      % (i, d, base_memory_size))
        return cls(positions, defaults, data)
