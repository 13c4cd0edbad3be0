"""A base's ``memory.pages`` (a msgpack map, ``bases.py``) read without whole-file copies.

``msgpack.unpackb`` of the file holds it twice (the file's bytes and every bin copied out of
them), 96 bytes a guest page; here each bin is read straight into its own buffer, and bins
nobody asked for are skipped. The small values (the block names) go through msgpack.
"""

import struct

import msgpack

from cloudlet_compute.errors import FormatError

BIN_HEADS = {0xC4: struct.Struct(">B"), 0xC5: struct.Struct(">H"), 0xC6: struct.Struct(">I")}
SMALL_READ = 4096


def read(path, skip=()):
    """Return ``{key: value}`` of the msgpack map in file ``path``: a bin as bytes read
    straight from the file (None for a key in ``skip``), anything else as msgpack decodes it."""
    try:
        return _read(path, skip)
    except (ValueError, msgpack.UnpackException) as exc:   # OutOfData, bad types
        raise FormatError("%s is damaged: %s" % (path, str(exc) or "truncated")) from None


def _read(path, skip):
    out = {}
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, read_size=SMALL_READ)
        count, pos = unpacker.read_map_header(), unpacker.tell()
        for _ in range(count):
            f.seek(pos)
            unpacker = msgpack.Unpacker(f, read_size=SMALL_READ)
            key = unpacker.unpack()
            pos += unpacker.tell()
            f.seek(pos)
            byte = f.read(1)
            if not byte:
                raise FormatError("%s is truncated after its %r key" % (path, key))
            head = BIN_HEADS.get(byte[0])
            if head is None:
                f.seek(pos)
                unpacker = msgpack.Unpacker(f, read_size=SMALL_READ)
                out[key] = unpacker.unpack()
                pos += unpacker.tell()
                continue
            size = f.read(head.size)
            if len(size) != head.size:
                raise FormatError("%s is truncated in its %r entry" % (path, key))
            (length,) = head.unpack(size)
            pos += 1 + head.size + length
            if key in skip:
                out[key] = None
                continue
            out[key] = f.read(length)
            if len(out[key]) != length:
                raise FormatError("%s is truncated in its %r entry" % (path, key))
    return out
