"""QEMU migration stream (version 3, as QEMU 7.2 writes it into a libvirt save image).

Only the RAM section is parsed; everything else (configuration, device state, the JSON
vmdesc) stays opaque bytes. Layout (all integers big-endian)::

    "QEVM" u32 version=3
    0x07 configuration section ...                  (opaque)
    0x01 u32 section_id  u8 len "ram"  u32 instance  u32 version=4
         u64 total_ram | MEM_SIZE  { u8 len idstr  u64 length }*  u64 EOS   [0x7e u32 id]
    ( 0x02 | 0x03 ) u32 section_id  page-record* u64 EOS  [0x7e u32 id]     (PART ... END)
    device sections                                 (opaque)
    0x00 EOF  0x06 u32 len JSON-vmdesc              (checked: a truncated tail is an error)

    page-record = u64 (ram_offset | flags)  [u8 len idstr unless CONTINUE]
                  ZERO: u8 fill  |  PAGE: 4096 bytes

A record may use CONTINUE across section boundaries. A paused save sends each page once;
a live stream may re-send a page (the later copy wins on load).
"""

import struct

from cloudlet_compute.errors import FormatError

MAGIC = b"QEVM"
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = (3,)
PAGE_SIZE = 4096

SECTION_START, SECTION_PART, SECTION_END = 0x01, 0x02, 0x03
SECTION_EOF, SECTION_VMDESC = 0x00, 0x06
SECTION_FOOTER = 0x7E

FLAG_ZERO = 0x02
FLAG_MEM_SIZE = 0x04
FLAG_PAGE = 0x08
FLAG_EOS = 0x10
FLAG_CONTINUE = 0x20

BE32 = struct.Struct(">I")
BE64 = struct.Struct(">Q")


class RamLayout:
    """Where the RAM pages of a memory image are.

    ``blocks``: ``[(idstr, length)]``; ``payload_offsets[i]``: file offset of the i-th PAGE
    record's 4096 bytes; ``page_keys[i]``: its guest address as ``block_index << 48 |
    ram_offset``; ``latest``: for every address, the payload offset of the last record
    that sent it, or -1 if that record said zeros; ``section_id`` of the RAM section;
    ``setup_end``: offset just after the RAM setup; ``ram_end``: just after the RAM section.
    """

    def __init__(self, blocks, payload_offsets, page_keys, latest, section_id, setup_end,
                 ram_end):
        self.blocks = blocks
        self.payload_offsets = payload_offsets
        self.page_keys = page_keys
        self.latest = latest
        self.section_id = section_id
        self.setup_end = setup_end
        self.ram_end = ram_end

    @property
    def ram_size(self):
        return sum(length for _, length in self.blocks)

    def block_names(self):
        return [name for name, _ in self.blocks]


def _need(buf, pos, length, what):
    if pos + length > len(buf):
        raise FormatError("migration stream truncated: expected %d bytes of %s at offset %d, "
                          "got %d" % (length, what, pos, max(0, len(buf) - pos)))


def _find_ram_section(buf, start):
    """Return (offset after the RAM START header, section id)."""
    pos = buf.find(b"\x03ram", start, start + (1 << 20))
    while pos >= 0:
        head = pos - 5
        if head >= start and buf[head] == SECTION_START:
            _need(buf, pos + 4, 8, "RAM section header")
            version = BE32.unpack_from(buf, pos + 8)[0]
            if version != 4:
                raise FormatError("RAM section version %d at offset %d is not supported"
                                  % (version, head))
            return pos + 12, BE32.unpack_from(buf, head + 1)[0]
        pos = buf.find(b"\x03ram", pos + 1, start + (1 << 20))
    raise FormatError("no RAM section in the migration stream starting at offset %d" % start)


def _skip_footer(buf, pos, section_id):
    if pos < len(buf) and buf[pos] == SECTION_FOOTER:
        _need(buf, pos, 5, "section footer")
        if BE32.unpack_from(buf, pos + 1)[0] != section_id:
            raise FormatError("section footer at offset %d closes another section" % pos)
        return pos + 5
    return pos


def parse(buf, start):
    """Parse the migration stream that begins at ``start`` in ``buf``; return a RamLayout."""
    _need(buf, start, 8, "stream header")
    if bytes(buf[start:start + 4]) != MAGIC:
        raise FormatError("no QEMU migration stream at offset %d (magic %r)"
                          % (start, bytes(buf[start:start + 4])))
    version = BE32.unpack_from(buf, start + 4)[0]
    if version not in SUPPORTED_VERSIONS:
        raise FormatError("QEMU migration stream version %d is not supported" % version)
    pos, section_id = _find_ram_section(buf, start + 8)

    _need(buf, pos, 8, "RAM size")
    total = BE64.unpack_from(buf, pos)[0]
    pos += 8
    if not total & FLAG_MEM_SIZE:
        raise FormatError("RAM section at offset %d does not start with its block list" % pos)
    total &= ~0xFFF
    blocks, names, seen = [], {}, 0
    while seen < total:
        _need(buf, pos, 1, "RAM block name")
        n = buf[pos]
        _need(buf, pos + 1, n + 8, "RAM block entry")
        name = bytes(buf[pos + 1:pos + 1 + n])
        length = BE64.unpack_from(buf, pos + 1 + n)[0]
        pos += 1 + n + 8
        names[name] = len(blocks)
        blocks.append((name.decode("ascii", "replace"), length))
        seen += length
    if seen != total:
        raise FormatError("RAM blocks add up to %d bytes, the stream announced %d" % (seen, total))
    _need(buf, pos, 8, "end of RAM setup")
    if BE64.unpack_from(buf, pos)[0] & ~0xFFF or not BE64.unpack_from(buf, pos)[0] & FLAG_EOS:
        raise FormatError("RAM setup at offset %d has unsupported extra fields "
                          "(postcopy or ignore-shared)" % pos)
    pos = _skip_footer(buf, pos + 8, section_id)
    setup_end = pos

    payload_offsets, page_keys, latest = [], [], {}
    block = None
    unpack64 = BE64.unpack_from
    size = len(buf)
    while True:
        _need(buf, pos, 5, "section header")
        kind = buf[pos]
        if kind not in (SECTION_PART, SECTION_END) or BE32.unpack_from(buf, pos + 1)[0] != section_id:
            raise FormatError("unexpected section type 0x%02x at offset %d inside RAM" % (kind, pos))
        pos += 5
        while True:
            if pos + 8 > size:
                _need(buf, pos, 8, "page record")
            word = unpack64(buf, pos)[0]
            pos += 8
            flags = word & 0xFFF
            if flags & (FLAG_ZERO | FLAG_PAGE):
                if not flags & FLAG_CONTINUE:
                    n = buf[pos]
                    try:
                        block = names[bytes(buf[pos + 1:pos + 1 + n])]
                    except KeyError:
                        raise FormatError("page record at offset %d names an unknown RAM block"
                                          % (pos - 8)) from None
                    pos += 1 + n
                elif block is None:
                    raise FormatError("page record at offset %d continues no block" % (pos - 8))
                offset = word & ~0xFFF
                if offset >= blocks[block][1]:
                    raise FormatError("page record at offset %d addresses %d, beyond block %s"
                                      % (pos - 8, offset, blocks[block][0]))
                if flags & ~FLAG_CONTINUE == FLAG_PAGE:
                    if pos + PAGE_SIZE > size:
                        _need(buf, pos, PAGE_SIZE, "page payload")
                    payload_offsets.append(pos)
                    page_keys.append(block << 48 | offset)
                    latest[block << 48 | offset] = pos
                    pos += PAGE_SIZE
                elif flags & ~FLAG_CONTINUE == FLAG_ZERO:
                    _need(buf, pos, 1, "zero page fill")
                    if buf[pos]:
                        raise FormatError("zero page record at offset %d has fill byte %d"
                                          % (pos - 8, buf[pos]))
                    latest[block << 48 | offset] = -1
                    pos += 1
                else:
                    raise FormatError("page record flags 0x%x at offset %d are not supported"
                                      % (flags, pos - 8))
            elif flags == FLAG_EOS:
                break
            else:
                raise FormatError("RAM record flags 0x%x at offset %d are not supported "
                                  "(compression, xbzrle or RDMA)" % (flags, pos - 8))
        pos = _skip_footer(buf, pos, section_id)
        if kind == SECTION_END:
            _check_end(buf, pos)
            return RamLayout(blocks, payload_offsets, page_keys, latest, section_id, setup_end,
                             pos)


def _check_end(buf, ram_end):
    """Check that the stream ends as QEMU (x86 machines) ends it: EOF, then the JSON vmdesc.

    The device state between the RAM section and the end is opaque, so this is how a
    truncated tail is caught.
    """
    size = len(buf)
    start = buf.rfind(b'{"page_size"', ram_end)
    if start >= ram_end + 6 and buf[start - 6] == SECTION_EOF and \
            buf[start - 5] == SECTION_VMDESC and BE32.unpack_from(buf, start - 4)[0] == size - start:
        return
    raise FormatError("migration stream does not end with QEMU's end-of-file marker and device "
                      "description: the image is truncated or damaged")


def canonical(buf, start, layout):
    """Rewrite a (live) stream so that every guest page is sent once, in address order.

    A live migration stream re-sends pages dirtied during pre-copy; this keeps the last
    copy of each, as QEMU would on load, and drops the rest. The configuration and RAM
    setup before, and the device state after, are kept byte for byte. Returns bytes.
    """
    out = bytearray(buf[start:layout.setup_end])
    out += bytes([SECTION_END]) + BE32.pack(layout.section_id)
    names = [name.encode("ascii") for name, _ in layout.blocks]
    current = None
    for key in sorted(layout.latest):
        block, offset = key >> 48, key & ((1 << 48) - 1)
        payload = layout.latest[key]
        flags = FLAG_PAGE if payload >= 0 else FLAG_ZERO
        if block == current:
            out += BE64.pack(offset | flags | FLAG_CONTINUE)
        else:
            out += BE64.pack(offset | flags) + bytes([len(names[block])]) + names[block]
            current = block
        out += buf[payload:payload + PAGE_SIZE] if payload >= 0 else b"\0"
    out += BE64.pack(FLAG_EOS) + bytes([SECTION_FOOTER]) + BE32.pack(layout.section_id)
    out += buf[layout.ram_end:]
    return bytes(out)
