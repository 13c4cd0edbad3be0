"""Apply stage: records -> the customized VM's memory image and disk, verified.

Memory slots are collected, then spliced into the skeleton (a slot no record names
keeps its default: the base page at the same guest address, or zeros; a slot copied from
the customized disk is read from the disk chunks once every blob is in). Disk chunks are
written, in offset order and coalesced, through NBD into the qcow2 over the base disk,
then read back for the content hash.
"""

import hashlib
import mmap

from cloudlet_compute.bases import BaseDiskChunks
from cloudlet_compute.errors import FormatError, IntegrityError
from cloudlet_compute.format import deltastream, migstream, records
from cloudlet_compute.format.records import CHUNK_SIZE
from cloudlet_compute.write.delta import content_sha256

MAX_WRITE = 4 << 20
STREAM_PIECE = 8 << 20


class Rebuild:
    """Collects the records of one overlay against ``base`` and produces the VM state."""

    def __init__(self, base, meta):
        self.base, self.meta = base, meta
        self.skeleton = None
        self.slots = {}
        self.disk = {}
        self.disk_chunks = base.disk_size // CHUNK_SIZE
        self._base_file = open(base.memory_path, "rb")
        self._base_mem = mmap.mmap(self._base_file.fileno(), 0, prot=mmap.PROT_READ)
        self._base_disk = BaseDiskChunks(base)
        self._resolver = records.Resolver(self._base_mem, self._check_base_offset,
                                         self._base_disk, overlay_disk=self._disk_page_ref)

    def close(self):
        """Release the base images."""
        self._base_mem.close()
        self._base_file.close()
        self._base_disk.close()

    def _check_base_offset(self, offset, where):
        if offset + CHUNK_SIZE > self.base.memory_size:
            raise FormatError("%s refers to base memory offset %d, beyond the %d-byte image"
                              % (where, offset, self.base.memory_size))

    def _disk_page_ref(self, offset, where):
        if self.meta.get("version") == 1:
            raise FormatError("%s copies the overlay's disk, which version 1 has not" % where)
        records.check_disk_offset(offset, self.base.disk_size, where, "overlay disk")
        return _DiskPage(offset)      # read when the disk is complete (_slot_page)

    def apply_blob(self, name, plain):
        """Take in every record of one blob's plaintext; return how many there were."""
        count = 0
        slots = self.skeleton.slots
        for target, index, source, value in records.iter_records(plain):
            count += 1
            where = "%s record %d" % (name, count)
            data = self._resolver.resolve(source, value, where)
            if not isinstance(data, _DiskPage):
                data = self._resolver.chunk(data)
            if target == records.TARGET_MEMORY:
                if index >= slots or index in self.slots:
                    raise FormatError("%s targets memory slot %d: beyond %d slots or repeated"
                                      % (where, index, slots))
                self.slots[index] = data
            elif isinstance(data, _DiskPage):
                raise FormatError("%s: a disk chunk cannot copy the overlay's own disk" % where)
            else:
                if index >= self.disk_chunks or index in self.disk:
                    raise FormatError("%s targets disk chunk %d: beyond %d chunks or repeated"
                                      % (where, index, self.disk_chunks))
                self.disk[index] = data
        return count

    def _slot_page(self, slot):
        """The page of ``slot``: its record's, else the skeleton's default."""
        page = self.slots.get(slot)
        if page is None:
            default = self.skeleton.defaults[slot]
            page = self._resolver.chunk(default if default >= 0 else None)
        elif isinstance(page, _DiskPage):
            page = self._overlay_disk_page(page.offset)
        return page

    def _overlay_disk_page(self, offset):
        """The customized disk's 4096 bytes at ``offset`` (checked by ``_disk_page_ref``)."""
        first, rel = divmod(offset, CHUNK_SIZE)
        data = b"".join(self.disk.get(i) or self._base_disk.read(i * CHUNK_SIZE, "a slot")
                        for i in range(first, first + 2 if rel else first + 1))
        return data[rel:rel + CHUNK_SIZE]

    def _image_pieces(self):
        data = memoryview(self.skeleton.data)
        prev = 0
        for slot, position in enumerate(self.skeleton.positions):
            yield data[prev:position]
            yield self._slot_page(slot)
            prev = position
        yield data[prev:]

    def ram_block_size(self, start, name):
        """The length of RAM block ``name`` in the skeleton's stream at ``start`` (or None)."""
        blocks = migstream.parse_setup(bytes(self.skeleton.data[:start + (1 << 20)]), start)[0]
        return dict(blocks).get(name)

    def delta_stream(self, start, ram_block):
        """Yield the QEMU stream (from ``start`` on) without the pages of ``ram_block`` that
        no record changed, for a restore whose RAM maps the base's RAM file
        (``deltastream.delta_stream``): O(changed pages + skeleton), no image hash."""
        return deltastream.delta_stream(self.skeleton, start, ram_block, self.slots,
                                        self._slot_page)

    def memory_stream(self, start=0):
        """Yield the rebuilt memory image from offset ``start`` on, in pieces of ~8 MiB.

        The SHA-256 covers the whole image; after the last piece, a mismatch with the
        overlay's hash raises ``IntegrityError`` (so a consumer that writes the pieces to
        a file must not use it before the generator is exhausted).
        """
        hasher, size, buf = hashlib.sha256(), 0, bytearray()
        for piece in self._image_pieces():
            buf += piece
            if len(buf) >= STREAM_PIECE:
                hasher.update(buf)
                size += len(buf)
                if size > start:
                    yield memoryview(buf)[max(0, start - size + len(buf)):]
                buf = bytearray()
        hasher.update(buf)
        size += len(buf)
        if size > start:
            yield memoryview(buf)[max(0, start - size + len(buf)):]
        expected = self.meta["memory"]["image_sha256"]
        if size != self.meta["memory"]["image_size"] or hasher.hexdigest() != expected:
            raise IntegrityError("rebuilt memory image does not match the overlay's hash %s"
                                 % expected)

    def memory_image(self):
        """Return the whole rebuilt memory image, checked."""
        return b"".join(bytes(piece) for piece in self.memory_stream())

    def write_disk(self, nbd):
        """Write the disk chunks through ``nbd``, read them back, check the content hash."""
        write_disk(nbd, self.base, self.disk, self.meta["disk"]["content_sha256"])


def write_disk(nbd, base, chunks, expected):
    """Write ``chunks`` (``{index: 4096 bytes}``) through ``nbd`` into the qcow2 over
    ``base``'s disk, read them back and check the disk content hash against ``expected``."""
    write_chunks(nbd, chunks)
    nbd.flush()
    check_disk(nbd, base, chunks, expected)


def write_chunks(nbd, chunks):
    """Write ``chunks`` (``{index: 4096 bytes}``) through ``nbd``, coalesced into runs."""
    for start, run in _runs(chunks):
        nbd.write(start * CHUNK_SIZE, b"".join(run))


def check_disk(nbd, base, indexes, expected):
    """Read back chunks ``indexes`` (all that differ from ``base``'s disk) through ``nbd``;
    check the disk content hash against ``expected``."""
    digests = bytearray(base.disk_digests())
    sha = hashlib.sha256
    for start, run in _runs(dict.fromkeys(indexes)):
        back = nbd.read(start * CHUNK_SIZE, len(run) * CHUNK_SIZE)
        for i in range(len(run)):
            digests[32 * (start + i):32 * (start + i + 1)] = \
                sha(back[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE]).digest()
    if content_sha256(bytes(digests)) != expected:
        raise IntegrityError("rebuilt disk does not match the expected content hash %s"
                             % expected)


def _runs(chunks):
    """Yield ``(first index, [bytes...])`` for runs of consecutive chunk indexes."""
    run, start = [], None
    for index in sorted(chunks):
        if run and (index != start + len(run) or len(run) * CHUNK_SIZE >= MAX_WRITE):
            yield start, run
            run = []
        if not run:
            start = index
        run.append(chunks[index])
    if run:
        yield start, run


class _DiskPage:
    """A memory slot's page that is the customized disk's 4096 bytes at ``offset``."""

    __slots__ = ("offset",)

    def __init__(self, offset):
        self.offset = offset
