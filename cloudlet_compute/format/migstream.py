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
from cloudlet_compute.format.records import CHUNK_SIZE

MAGIC = b"QEVM"
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = (3,)

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


class _Whole:
    """A stream that is all in memory (a file's mmap or bytes)."""

    drop_at = float("inf")      # walk calls drop() past this position; these sources keep all

    def __init__(self, buf):
        self.buf = buf

    def drop(self, pos):
        return 0

    def need(self, pos, length, what):
        _need(self.buf, pos, length, what)

    def find(self, pattern, start, end):
        return self.buf.find(pattern, start, end)


class StreamFeed:
    """A stream arriving through ``recv(n)`` (b"" at its end), parsed as it comes.

    Every byte received is kept in ``buf``, so positions reported by ``walk`` stay valid;
    ``received`` counts them and ``finish`` reads up to the end.
    """

    drop_at = _Whole.drop_at
    drop = _Whole.drop

    def __init__(self, recv, piece=1 << 20):
        self.buf = bytearray()
        self._recv, self._piece = recv, piece
        self.eof = False

    def _fill(self):
        if self.eof:
            return False
        data = self._recv(self._piece)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def need(self, pos, length, what):
        while len(self.buf) < pos + length:
            if not self._fill():
                _need(self.buf, pos, length, what)

    def find(self, pattern, start, end):
        while True:
            found = self.buf.find(pattern, start, end)
            if found >= 0 or len(self.buf) >= end or not self._fill():
                return found

    def finish(self):
        """Read the rest of the stream."""
        while self._fill():
            pass


def _find_ram_section(src, start):
    """Return (offset after the RAM START header, section id)."""
    buf, limit = src.buf, start + (1 << 20)
    pos = src.find(b"\x03ram", start, limit)
    while pos >= 0:
        head = pos - 5
        if head >= start and buf[head] == SECTION_START:
            src.need(pos + 4, 8, "RAM section header")
            version = BE32.unpack_from(buf, pos + 8)[0]
            if version != 4:
                raise FormatError("RAM section version %d at offset %d is not supported"
                                  % (version, head))
            return pos + 12, BE32.unpack_from(buf, head + 1)[0]
        pos = src.find(b"\x03ram", pos + 1, limit)
    raise FormatError("no RAM section in the migration stream starting at offset %d" % start)


def _skip_footer(src, pos, section_id, origin=0):
    src.need(pos, 1, "section footer")
    if src.buf[pos] == SECTION_FOOTER:
        src.need(pos, 5, "section footer")
        if BE32.unpack_from(src.buf, pos + 1)[0] != section_id:
            raise FormatError("section footer at offset %d closes another section"
                              % (origin + pos))
        return pos + 5
    return pos


def walk(src, start):
    """Walk the RAM section of the stream at ``start`` in ``src`` (``StreamFeed``,
    ``write.spool.FileFeed`` or any object with ``buf``/``need``/``find``/``drop``/``drop_at``:
    past ``drop_at``, ``drop(pos)`` may forget the bytes before ``pos`` and return how many).

    Yields ``("setup", blocks, section_id, setup_end)`` once, then ``("page", key,
    payload_offset)`` per page record (offset -1 for a zero page; key = ``block_index << 48
    | ram_offset``), then ``("end", ram_end)`` after the RAM section's END.
    """
    buf = src.buf
    src.need(start, 8, "stream header")
    if bytes(buf[start:start + 4]) != MAGIC:
        raise FormatError("no QEMU migration stream at offset %d (magic %r)"
                          % (start, bytes(buf[start:start + 4])))
    version = BE32.unpack_from(buf, start + 4)[0]
    if version not in SUPPORTED_VERSIONS:
        raise FormatError("QEMU migration stream version %d is not supported" % version)
    pos, section_id = _find_ram_section(src, start + 8)

    src.need(pos, 8, "RAM size")
    total = BE64.unpack_from(buf, pos)[0]
    pos += 8
    if not total & FLAG_MEM_SIZE:
        raise FormatError("RAM section at offset %d does not start with its block list" % pos)
    total &= ~0xFFF
    blocks, names, seen = [], {}, 0
    while seen < total:
        src.need(pos, 1, "RAM block name")
        n = buf[pos]
        src.need(pos + 1, n + 8, "RAM block entry")
        name = bytes(buf[pos + 1:pos + 1 + n])
        if not name.isascii():   # QEMU's idstrs are; a rewritten stream must name it the same
            raise FormatError("RAM block name %r at offset %d is not ASCII" % (name, pos))
        length = BE64.unpack_from(buf, pos + 1 + n)[0]
        pos += 1 + n + 8
        names[name] = len(blocks)
        blocks.append((name.decode("ascii"), length))
        seen += length
    if seen != total:
        raise FormatError("RAM blocks add up to %d bytes, the stream announced %d" % (seen, total))
    src.need(pos, 8, "end of RAM setup")
    if BE64.unpack_from(buf, pos)[0] & ~0xFFF or not BE64.unpack_from(buf, pos)[0] & FLAG_EOS:
        raise FormatError("RAM setup at offset %d has unsupported extra fields "
                          "(postcopy or ignore-shared)" % pos)
    pos = _skip_footer(src, pos + 8, section_id)
    yield "setup", blocks, section_id, pos

    block, origin, drop_at = None, 0, src.drop_at   # origin: file offset of buf[0]
    unpack64, need = BE64.unpack_from, src.need
    while True:
        need(pos, 5, "section header")
        kind = buf[pos]
        if kind not in (SECTION_PART, SECTION_END) or BE32.unpack_from(buf, pos + 1)[0] != section_id:
            raise FormatError("unexpected section type 0x%02x at offset %d inside RAM"
                              % (kind, origin + pos))
        pos += 5
        while True:
            if pos > drop_at:
                shift = src.drop(pos)
                pos, origin, drop_at = pos - shift, origin + shift, src.drop_at
            need(pos, 8 + 1, "page record")
            word = unpack64(buf, pos)[0]
            pos += 8
            flags = word & 0xFFF
            if flags & (FLAG_ZERO | FLAG_PAGE):
                if not flags & FLAG_CONTINUE:
                    n = buf[pos]
                    need(pos, 1 + n + 1, "RAM block name")
                    try:
                        block = names[bytes(buf[pos + 1:pos + 1 + n])]
                    except KeyError:
                        raise FormatError("page record at offset %d names an unknown RAM block"
                                          % (origin + pos - 8)) from None
                    pos += 1 + n
                elif block is None:
                    raise FormatError("page record at offset %d continues no block"
                                      % (origin + pos - 8))
                offset = word & ~0xFFF
                if offset >= blocks[block][1]:
                    raise FormatError("page record at offset %d addresses %d, beyond block %s"
                                      % (origin + pos - 8, offset, blocks[block][0]))
                if flags & ~FLAG_CONTINUE == FLAG_PAGE:
                    need(pos, CHUNK_SIZE, "page payload")
                    yield "page", block << 48 | offset, origin + pos
                    pos += CHUNK_SIZE
                elif flags & ~FLAG_CONTINUE == FLAG_ZERO:
                    if buf[pos]:
                        raise FormatError("zero page record at offset %d has fill byte %d"
                                          % (origin + pos - 8, buf[pos]))
                    yield "page", block << 48 | offset, -1
                    pos += 1
                else:
                    raise FormatError("page record flags 0x%x at offset %d are not supported"
                                      % (flags, origin + pos - 8))
            elif flags == FLAG_EOS:
                break
            else:
                raise FormatError("RAM record flags 0x%x at offset %d are not supported "
                                  "(compression, xbzrle or RDMA)" % (flags, origin + pos - 8))
        pos = _skip_footer(src, pos, section_id, origin)
        if kind == SECTION_END:
            yield "end", origin + pos
            return


def parse_setup(buf, start=0):
    """Return ``(blocks, section_id, setup_end)`` of the stream at ``start`` in ``buf``."""
    for event in walk(_Whole(buf), start):
        return event[1:]


def parse(buf, start):
    """Parse the migration stream that begins at ``start`` in ``buf``; return a RamLayout."""
    payload_offsets, page_keys, latest = [], [], {}
    for event in walk(_Whole(buf), start):
        if event[0] == "page":
            _, key, pos = event
            if pos >= 0:
                payload_offsets.append(pos)
                page_keys.append(key)
            latest[key] = pos
        elif event[0] == "setup":
            _, blocks, section_id, setup_end = event
        else:
            ram_end = event[1]
    check_end(buf, ram_end)
    return RamLayout(blocks, payload_offsets, page_keys, latest, section_id, setup_end, ram_end)


def check_end(buf, ram_end):
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
    latest = layout.latest
    pages = ((key, buf[latest[key]:latest[key] + CHUNK_SIZE] if latest[key] >= 0 else None)
             for key in sorted(latest))
    return b"".join(write_canonical(buf[start:layout.setup_end], layout.section_id,
                                    layout.block_names(), pages, buf[layout.ram_end:]))


def write_canonical(setup, section_id, block_names, pages, tail):
    """Yield a stream made of ``setup`` (header, configuration and RAM setup, as sent),
    one RAM END section holding ``pages`` (``(key, 4096 bytes or None for zeros)`` in key
    order) and ``tail`` (device state to the end), in pieces."""
    yield bytes(setup)
    yield from ram_section(SECTION_END, section_id, block_names, pages)
    yield bytes(tail)


def ram_section(kind, section_id, block_names, pages, piece=8 << 20):
    """Yield, in pieces of about ``piece`` bytes, one RAM section of ``kind``
    (``SECTION_PART`` or ``SECTION_END``) sending ``pages``: ``(key, 4096 bytes or None
    for zeros)``. A loader keeps the last copy of a page sent twice."""
    out = bytearray([kind]) + BE32.pack(section_id)
    names = [name.encode("ascii") for name in block_names]
    current = None
    for key, payload in pages:
        block, offset = key >> 48, key & ((1 << 48) - 1)
        flags = FLAG_PAGE if payload is not None else FLAG_ZERO
        if block == current:
            out += BE64.pack(offset | flags | FLAG_CONTINUE)
        else:
            out += BE64.pack(offset | flags) + bytes([len(names[block])]) + names[block]
            current = block
        out += payload if payload is not None else b"\0"
        if len(out) >= piece:
            yield bytes(out)
            out = bytearray()
    out += BE64.pack(FLAG_EOS) + bytes([SECTION_FOOTER]) + BE32.pack(section_id)
    yield bytes(out)
