"""The overlay package: a zip of stored (uncompressed) members (``doc/overlay-format.md``).

Members, in file order: ``memory-skeleton``, ``blob-00000`` ..., ``overlay-meta``. The meta
comes last, next to the zip's central directory, so one read of the package's tail gets
both. The reader parses the zip itself (it reads by byte range, locally or over HTTP) and
trusts nothing: names must be exactly the expected ones, members stored, in bounds,
non-overlapping, their CRC-32 right.
"""

import os
import struct
import zipfile
import zlib

from cloudlet_compute.errors import FormatError
from cloudlet_compute.format import meta as metamod

LOCAL = struct.Struct("<IHHHHHIIIHH")
LOCAL_SIG = 0x04034B50
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
CENTRAL_SIG = 0x02014B50
EOCD = struct.Struct("<IHHHHIIH")
EOCD_SIG = 0x06054B50
ZIP64_LOCATOR = struct.Struct("<IIQI")
ZIP64_LOCATOR_SIG = 0x07064B50
ZIP64_EOCD = struct.Struct("<IQHHIIQQQQ")
ZIP64_EOCD_SIG = 0x06064B50
COMMENT = b"OpenStack++ VM overlay"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def _is_member_name(name):
    return name in (metamod.MEMBER_META, metamod.MEMBER_SKELETON) or bool(
        metamod.BLOB_MEMBER.match(name))


class PackageWriter:
    """Writes a package to ``path`` through a ``.part`` file renamed on ``finish``."""

    def __init__(self, path):
        self.path = path
        self._part = path + ".part"
        self._zip = zipfile.ZipFile(self._part, "w", compression=zipfile.ZIP_STORED,
                                    allowZip64=True)
        self._zip.comment = COMMENT

    def add(self, name, data):
        """Append member ``name`` holding ``data``."""
        if not _is_member_name(name):
            raise ValueError("not an overlay member name: %r" % name)
        self._zip.writestr(zipfile.ZipInfo(name, date_time=FIXED_DATE), data)

    def finish(self, meta):
        """Append the meta, close, and move the package into place."""
        self.add(metamod.MEMBER_META, metamod.encode(meta))
        self._zip.close()
        os.replace(self._part, self.path)

    def abort(self):
        """Drop everything written so far."""
        self._zip.close()
        if os.path.exists(self._part):
            os.unlink(self._part)


class Member:
    """One member of a package as its central directory describes it."""

    def __init__(self, name, offset, size, crc):
        self.name, self.offset, self.size, self.crc = name, offset, size, crc


class Package:
    """A package being read from a ``fetch`` source: its members and decoded meta."""

    def __init__(self, source):
        self.source = source
        self.members, self._cd_offset = _read_directory(source)
        meta_member = self.members.get(metamod.MEMBER_META)
        if meta_member is None:
            raise FormatError("%s is a zip but has no %s member"
                              % (source.location, metamod.MEMBER_META))
        self.meta = metamod.decode(self.read_member(metamod.MEMBER_META))
        expected = {metamod.MEMBER_META, metamod.MEMBER_SKELETON}
        expected.update(b["member"] for b in self.meta["blobs"])
        if set(self.members) != expected:
            extra = sorted(set(self.members) - expected)
            missing = sorted(expected - set(self.members))
            raise FormatError("package members do not match its meta (unexpected: %s; "
                              "missing: %s)" % (extra or "none", missing or "none"))

    def read_member(self, name):
        """Return the verified bytes of member ``name`` (one or two range reads)."""
        member = self.members[name]
        header = self.source.read(member.offset, LOCAL.size)
        extra_len = _check_local(header, member)
        rest = self.source.read(member.offset + LOCAL.size, extra_len + member.size)
        _check_local_name(rest, member)
        data = rest[extra_len:]
        _check_crc(data, member)
        return data

    def stream_members(self, names):
        """Yield ``(name, bytes)`` for ``names`` in file order, from one streamed read."""
        wanted = sorted((self.members[n] for n in names), key=lambda m: m.offset)
        if not wanted:
            return
        start, last = wanted[0].offset, wanted[-1].offset
        end = min([m.offset for m in self.members.values() if m.offset > last]
                  + [self._cd_offset])
        reader = _StreamReader(self.source.stream(start, end - start), start)
        for member in wanted:
            reader.skip_to(member.offset)
            header = reader.take(LOCAL.size)
            _check_local_name(reader.take(_check_local(header, member)), member)
            data = reader.take(member.size)
            _check_crc(data, member)
            yield member.name, data
        reader.close()


class _StreamReader:
    """Exact-length reads over an iterator of byte pieces, starting at file offset ``pos``."""

    def __init__(self, pieces, pos):
        self._pieces = pieces
        self._buf = bytearray()
        self.pos = pos

    def take(self, length):
        while len(self._buf) < length:
            try:
                self._buf += next(self._pieces)
            except StopIteration:
                raise FormatError("package ends early: expected %d bytes at offset %d, got %d"
                                  % (length, self.pos, len(self._buf))) from None
        data = bytes(self._buf[:length])
        del self._buf[:length]
        self.pos += length
        return data

    def skip_to(self, offset):
        if offset < self.pos:
            raise FormatError("package members overlap at offset %d" % offset)
        self.take(offset - self.pos)

    def close(self):
        close = getattr(self._pieces, "close", None)
        if close:
            close()


def _check_local(header, member):
    """Check a local file header; return the length of the name and extra field after it."""
    sig, _v, flags, method, _t, _d, _crc, _cs, _us, name_len, extra_len = LOCAL.unpack(header)
    if sig != LOCAL_SIG:
        raise FormatError("member %s: no local header at offset %d" % (member.name, member.offset))
    if method != 0 or flags & 0x1:
        raise FormatError("member %s is compressed or encrypted; only stored members are read"
                          % member.name)
    if name_len != len(member.name.encode()):
        raise FormatError("member %s: local header names another member" % member.name)
    return name_len + extra_len


def _check_local_name(name_and_extra, member):
    if name_and_extra[:len(member.name.encode())] != member.name.encode():
        raise FormatError("member %s: local header names another member" % member.name)


def _check_crc(data, member):
    if zlib.crc32(data) != member.crc:
        raise FormatError("member %s fails its CRC-32 check" % member.name)


def _find_eocd(source):
    tail_len = min(source.size, EOCD.size + 0xFFFF)
    tail_start = source.size - tail_len
    tail = source.read(tail_start, tail_len)
    pos = tail.rfind(struct.pack("<I", EOCD_SIG))
    if pos < 0 or len(tail) - pos < EOCD.size:
        raise FormatError("%s is not a zip package, or is truncated (no end-of-central-directory "
                          "record)"
                          % source.location)
    return tail_start + pos, EOCD.unpack_from(tail, pos)


def _read_directory(source):
    """Parse the central directory; return ``({name: Member}, directory offset)``."""
    if source.size < EOCD.size:
        raise FormatError("%s is %d bytes: too short for a zip package"
                          % (source.location, source.size))
    eocd_pos, eocd = _find_eocd(source)
    _sig, disk, cd_disk, _n_disk, count, cd_size, cd_offset, _clen = eocd
    if disk or cd_disk:
        raise FormatError("multi-volume zip packages are not supported")
    if count == 0xFFFF or cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:
        count, cd_size, cd_offset = _zip64_directory(source, eocd_pos)
    if cd_offset + cd_size > eocd_pos:
        raise FormatError("zip central directory (%d bytes at %d) runs past its end record at %d"
                          % (cd_size, cd_offset, eocd_pos))
    if count > metamod.MAX_BLOBS + 2:
        raise FormatError("package has %d members, more than an overlay can" % count)
    directory = source.read(cd_offset, cd_size)
    members, pos = {}, 0
    for _ in range(count):
        if cd_size - pos < CENTRAL.size:
            raise FormatError("zip central directory truncated at offset %d" % (cd_offset + pos))
        (sig, _mb, _v, flags, method, _t, _d, crc, csize, usize, name_len, extra_len,
         comment_len, _ds, _ia, _ea, offset) = CENTRAL.unpack_from(directory, pos)
        if sig != CENTRAL_SIG:
            raise FormatError("bad zip central directory entry at offset %d" % (cd_offset + pos))
        raw_name = directory[pos + CENTRAL.size:pos + CENTRAL.size + name_len]
        extra = directory[pos + CENTRAL.size + name_len:pos + CENTRAL.size + name_len + extra_len]
        pos += CENTRAL.size + name_len + extra_len + comment_len
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("zip member name %r is not UTF-8" % raw_name) from None
        if not _is_member_name(name):
            raise FormatError("unexpected zip member %r: not part of an overlay package" % name)
        if name in members:
            raise FormatError("zip member %r appears twice" % name)
        usize, csize, offset = _zip64_fields(extra, usize, csize, offset, name)
        if method != 0 or flags & 0x1 or csize != usize:
            raise FormatError("zip member %r is compressed or encrypted; members must be stored"
                              % name)
        if offset + LOCAL.size + name_len + usize > cd_offset:
            raise FormatError("zip member %r (%d bytes at %d) runs into the central directory"
                              % (name, usize, offset))
        members[name] = Member(name, offset, usize, crc)
    ordered = sorted(members.values(), key=lambda m: m.offset)
    for first, second in zip(ordered, ordered[1:]):
        if first.offset + LOCAL.size + len(first.name) + first.size > second.offset:
            raise FormatError("zip members %r and %r overlap" % (first.name, second.name))
    return members, cd_offset


def _zip64_directory(source, eocd_pos):
    if eocd_pos < ZIP64_LOCATOR.size:
        raise FormatError("zip64 package without a zip64 locator")
    sig, _disk, rec_offset, _total = ZIP64_LOCATOR.unpack(
        source.read(eocd_pos - ZIP64_LOCATOR.size, ZIP64_LOCATOR.size))
    if sig != ZIP64_LOCATOR_SIG or rec_offset + ZIP64_EOCD.size > eocd_pos:
        raise FormatError("bad zip64 end-of-central-directory locator")
    fields = ZIP64_EOCD.unpack(source.read(rec_offset, ZIP64_EOCD.size))
    if fields[0] != ZIP64_EOCD_SIG:
        raise FormatError("bad zip64 end-of-central-directory record")
    return fields[7], fields[8], fields[9]


def _zip64_fields(extra, usize, csize, offset, name):
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + size]
        pos += 4 + size
        if tag != 0x0001:
            continue
        values = list(struct.unpack_from("<%dQ" % (len(body) // 8), body))
        try:
            if usize == 0xFFFFFFFF:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF:
                offset = values.pop(0)
        except IndexError:
            raise FormatError("zip member %r has a short zip64 extra field" % name) from None
    if 0xFFFFFFFF in (usize, csize, offset):
        raise FormatError("zip member %r lacks its zip64 sizes" % name)
    return usize, csize, offset
