"""Delta-only QEMU stream: a skeleton's stream without the pages a RAM file already holds.

A restore whose guest RAM maps the base's RAM file privately (``host/ramfile.py``) needs
only the page records whose content differs from that file. Given a skeleton (the memory
image with its page payloads cut out, ``skeleton.py``), this yields the QEMU stream with
every PAGE record of the RAM-file block that has no overlay record dropped; PAGE records
of other blocks (vga.vram, ROMs...), ZERO records, section framing and device state are
kept. A kept record that continued a dropped one's block (``FLAG_CONTINUE``) names its
block again. The work follows the records kept: runs of dropped (or kept ZERO) records
are skipped with byte operations, not record by record.
"""

import bisect

from cloudlet_compute.errors import FormatError
from cloudlet_compute.format import migstream
from cloudlet_compute.format.migstream import (BE32, BE64, FLAG_CONTINUE, FLAG_EOS, FLAG_PAGE,
                                               FLAG_ZERO, SECTION_END, SECTION_FOOTER,
                                               SECTION_PART)

PAGE_WORD, ZERO_WORD = 8, 9          # a PAGE record without payload; a ZERO record
_PAGE_FLAGS = FLAG_PAGE | FLAG_CONTINUE
_ZERO_FLAGS = FLAG_ZERO | FLAG_CONTINUE


def _table(flag):
    return bytes(0 if b == flag else 1 for b in range(256))


_NOT_PAGE, _NOT_ZERO = _table(_PAGE_FLAGS), _table(_ZERO_FLAGS)


def _run(data, pos, limit, stride, table):
    """How many of the next ``limit`` records at ``pos`` are ``stride``-byte CONTINUE records
    whose flag byte ``table`` maps to 0 (ZERO ones also need a zero fill byte). Looks at
    windows growing from 64 records, so a short run costs little."""
    limit = min(limit, (len(data) - pos) // stride)
    count, window = 0, 64
    while count < limit:
        end = min(limit, count + window)
        at = pos + stride * count
        flags = data[at + 7:pos + stride * end:stride].translate(table)
        found = flags.find(1)
        if stride == ZERO_WORD:
            fills = data[at + 8:pos + stride * end:stride]
            nonzero = len(fills) - len(fills.lstrip(b"\0"))
            if nonzero < len(fills) and (found < 0 or nonzero < found):
                found = nonzero
        if found >= 0:
            return count + found
        count, window = end, window * 4
    return count


def delta_stream(skel, start, ram_block, changed, page_of):
    """Yield the delta-only stream (from offset ``start`` of ``skel.data`` on, in pieces).

    ``ram_block``: the name of the block the RAM file holds; ``changed``: the slots that
    have an overlay record (kept); ``page_of(slot)``: the 4096 bytes of a kept slot.
    """
    data = bytes(skel.data)
    blocks, section_id, pos = migstream.parse_setup(data, start)
    names = [name.encode("ascii") for name, _ in blocks]
    ram = [name for name, _ in blocks].index(ram_block) if ram_block in dict(blocks) else -1
    kept = sorted(changed)
    positions, slots = skel.positions, skel.slots
    out, copy_from = [], start
    slot, block, emitted = 0, None, None     # block: of the input stream; emitted: as loaded
    while True:
        if pos + 5 > len(data) or data[pos] not in (SECTION_PART, SECTION_END) or \
                BE32.unpack_from(data, pos + 1)[0] != section_id:
            raise FormatError("skeleton stream: no RAM section part at offset %d" % pos)
        kind, pos = data[pos], pos + 5
        while True:
            if block == ram and block is not None:
                nxt = kept[bisect.bisect_left(kept, slot)] if kept and kept[-1] >= slot else slots
                count = _run(data, pos, nxt - slot, PAGE_WORD, _NOT_PAGE)
                if count:
                    if copy_from < pos:
                        out.append(data[copy_from:pos])
                    pos += PAGE_WORD * count
                    copy_from, slot = pos, slot + count
                    continue
            if block is not None and emitted == block:
                count = _run(data, pos, len(data), ZERO_WORD, _NOT_ZERO)
                if count:
                    pos += ZERO_WORD * count
                    continue
            if pos + 8 > len(data):
                raise FormatError("skeleton stream truncated at offset %d" % pos)
            head = pos
            word = BE64.unpack_from(data, pos)[0]
            flags, pos = word & 0xFFF, pos + 8
            if flags == FLAG_EOS:
                break
            if flags & ~FLAG_CONTINUE not in (FLAG_PAGE, FLAG_ZERO):
                raise FormatError("skeleton stream: record flags 0x%x at offset %d are not "
                                  "supported" % (flags, head))
            if flags & FLAG_CONTINUE:
                if block is None:
                    raise FormatError("skeleton stream: record at offset %d continues no block"
                                      % head)
            else:
                n = data[pos] if pos < len(data) else 0
                try:
                    block = names.index(data[pos + 1:pos + 1 + n])
                except ValueError:
                    raise FormatError("skeleton stream: record at offset %d names an unknown "
                                      "RAM block" % head) from None
                pos += 1 + n
            if word & ~0xFFF >= blocks[block][1]:
                raise FormatError("skeleton stream: record at offset %d addresses beyond block %s"
                                  % (head, blocks[block][0]))
            page = flags & FLAG_PAGE
            if page and (slot >= slots or positions[slot] != pos):
                raise FormatError("skeleton slot %d is not where the page record at offset %d "
                                  "puts it" % (slot, head))
            if page and block == ram and slot not in changed:
                if copy_from < head:
                    out.append(data[copy_from:head])
                copy_from, slot = pos, slot + 1
                continue
            if flags & FLAG_CONTINUE and emitted != block:
                out.append(data[copy_from:head])
                out.append(BE64.pack(word & ~FLAG_CONTINUE) + bytes([len(names[block])]) +
                           names[block])
                copy_from = pos
            emitted = block
            if page:
                out.append(data[copy_from:pos])
                out.append(page_of(slot))
                copy_from, slot = pos, slot + 1
            else:
                if pos >= len(data) or data[pos]:
                    raise FormatError("skeleton stream: zero record at offset %d has a fill "
                                      "byte" % head)
                pos += 1
            if len(out) > 4096:
                yield b"".join(out)
                out = []
        if pos < len(data) and data[pos] == SECTION_FOOTER:
            pos += 5
        if kind == SECTION_END:
            break
    if slot != slots:
        raise FormatError("skeleton has %d slots, its RAM section holds %d page records"
                          % (slots, slot))
    migstream.check_end(data, pos)
    out.append(data[copy_from:])
    yield b"".join(out)
