"""VM handoff, destination side (``receive``): frames -> pages and chunks, latest copy wins ->
memory and disk digests checked -> disk written over the local base, memory image rebuilt
with each page once (``migstream.write_canonical``) -> restore. The caller then reports
``running`` or ``failed`` to the source through the returned ``Reception``.

The other side: ``handoff.source``. Wire format and channel: ``handoff.wire`` and
``doc/handoff.md``.
"""

import hashlib
import logging
import mmap
import os
import time

import msgpack

from cloudlet_compute import bases
from cloudlet_compute.errors import (ConflictError, FormatError, IntegrityError,
                                     NotFoundError)
from cloudlet_compute.format import blobcodec, migstream, records, saveimage
from cloudlet_compute.format.records import CHUNK_SIZE, TARGET_DISK, TARGET_MEMORY, ZERO_DIGEST
from cloudlet_compute.handoff import wire
from cloudlet_compute.handoff.protocol import PROTOCOL_VERSION, memory_digest
from cloudlet_compute.host import domains, instances
from cloudlet_compute.host.nbd import NBDServer
from cloudlet_compute.read import apply

LOG = logging.getLogger(__name__)

MAX_PLAIN = 64 << 20          # bound on any frame's decompressed size


class _Reassembly:
    """The VM state as frames bring it: latest copy of every page and disk chunk."""

    def __init__(self, base, base_mem, base_disk):
        self.base = base
        _blocks, _keys, offsets, digests = base.memory_pages()
        self.digest_at = {offset: digests[32 * i:32 * i + 32] for i, offset in enumerate(offsets)}
        self.pages, self.digests, self.disk = {}, {}, {}
        self.setup = self.tail = None
        self.blocks = self.section_id = None
        self.disk_chunks = base.disk_size // CHUNK_SIZE
        self.resolver = records.Resolver(base_mem, self._check_base_offset, base_disk,
                                        prior=self._held)

    def take_setup(self, setup):
        """The stream's header, configuration and RAM setup."""
        self.blocks, self.section_id, end = migstream.parse_setup(setup)
        if end != len(setup):
            raise FormatError("handoff setup holds %d bytes after the RAM setup"
                              % (len(setup) - end))
        self.setup = setup

    def _check_base_offset(self, offset, where):
        if offset not in self.digest_at:
            raise FormatError("%s refers to base memory offset %d, which is not a page of "
                              "the base" % (where, offset))

    def _held(self, ref, where):
        target, index = ref
        held = self.disk if target == TARGET_DISK else self.pages
        if index not in held:
            raise FormatError("%s copies chunk %#x, which was never sent" % (where, index))
        return self.resolver.chunk(held[index]) if target == TARGET_MEMORY else held[index]

    def take_records(self, plain, frame):
        """Apply one RECORDS frame; return the guest page keys (in order) and the disk chunk
        indexes it wrote."""
        keys, chunks = [], []
        for n, (target, index, source, value) in enumerate(records.iter_records(plain)):
            where = "frame %d record %d" % (frame, n)
            data = self.resolver.resolve(source, value, where)
            if target == TARGET_DISK:
                if index >= self.disk_chunks:
                    raise FormatError("%s targets disk chunk %d of %d" % (where, index,
                                                                         self.disk_chunks))
                self.disk[index] = bytes(self.resolver.chunk(data))
                chunks.append(index)
                continue
            if self.blocks is None:
                raise FormatError("%s targets memory before the stream's setup" % where)
            block, offset = index >> 48, index & ((1 << 48) - 1)
            if block >= len(self.blocks) or offset % CHUNK_SIZE or \
                    offset >= self.blocks[block][1]:
                raise FormatError("%s targets guest page %#x, outside the RAM blocks"
                                  % (where, index))
            self.pages[index] = data
            keys.append(index)
            if data is None:
                self.digests[index] = ZERO_DIGEST
            elif isinstance(data, int):
                self.digests[index] = self.digest_at[data]
            else:
                self.digests[index] = hashlib.sha256(data).digest()
        return keys, chunks

    def ram_section(self, kind, keys):
        """One RAM section of the rebuilt stream sending the current bytes of ``keys``."""
        pages = ((key, None if self.pages[key] is None else self.resolver.chunk(self.pages[key]))
                 for key in keys)
        return migstream.ram_section(kind, self.section_id, [n for n, _ in self.blocks], pages)


class Reception:
    """A handed-off VM restored at the destination; tell the source how it ends."""

    def __init__(self, channel, stats):
        self.channel, self.stats = channel, stats

    def running(self):
        """The VM runs here: the source may delete its copy."""
        try:
            self.channel.send(wire.RUNNING, b"")
        finally:
            self.channel.close()

    def failed(self, reason):
        """The VM could not be started here: the source keeps its copy."""
        self.channel.end_with(wire.FAILED, reason)


def _expect_header(channel):
    kind, payload = channel.receive()
    if kind != wire.HEADER:
        raise FormatError("handoff stream starts with a %s frame, not a header"
                          % wire.NAMES[kind])
    try:
        header = msgpack.unpackb(payload)
        ok = isinstance(header, dict) and header.get("version") == PROTOCOL_VERSION and \
            all(isinstance(header.get(k), t) for k, t in (
                ("base_vm_sha256", str), ("base_memory_sha256", str), ("disk_size", int),
                ("xml", str)))
    except (ValueError, msgpack.UnpackException):
        ok = False
    if not ok:
        raise FormatError("handoff header is not a version %d header" % PROTOCOL_VERSION)
    return header


def receive(conn, store, channel, placement, paused=False, require_base=None):
    """Receive a handed-off VM from ``channel`` and start it at ``placement``.

    The memory image and the disk are written while frames arrive (the image as a stream
    of RAM PART sections, a page sent again simply appearing again), so that after the
    source's END only the checks and the restore remain. Returns a ``Reception`` (the
    caller reports ``running()`` or ``failed()``). On failure nothing is left here (no
    domain, no disk) and the source is told why.
    """
    t0 = time.monotonic()
    created = False
    stats = {}
    try:
        header = _expect_header(channel)
        try:
            base = store.get(header["base_vm_sha256"])
        except NotFoundError:
            raise NotFoundError("the destination has no base VM %s"
                                % header["base_vm_sha256"]) from None
        if require_base and base.id != require_base:
            raise IntegrityError("the handed-off VM is of base VM %s, not %s"
                                 % (base.id, require_base))
        if base.memory_sha256 != header["base_memory_sha256"] or \
                base.disk_size != header["disk_size"]:
            raise IntegrityError("base VM %s here differs from the source's (memory image or "
                                 "disk size)" % base.id)
        domains.ensure_free(conn, placement.name)
        if placement.exists():
            raise ConflictError("%s is already in use" % placement.path)
        placement.create(base)
        created = True
        with open(base.memory_path, "rb") as f, \
                mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as base_mem, \
                bases.BaseDiskChunks(base) as base_disk, \
                NBDServer(placement.disk_path, "qcow2",
                          os.path.join(placement.path, "nbd.sock")) as disk:
            state = _Reassembly(base, base_mem, base_disk)
            pieces = _image_pieces(channel, state, disk, stats)
            instances.start(conn, placement, base, saveimage.SaveHeader(header["xml"], ""),
                            pieces, paused)
    except BaseException as exc:
        if created:
            placement.discard()
        if not isinstance(exc, wire.PeerFailed):
            channel.end_with(wire.FAILED, exc)
        channel.close()
        raise
    stats.update({"total": time.monotonic() - t0,
                  "after_end": time.monotonic() - stats.pop("end_at"),
                  "bytes_received": channel.bytes_received, "pages": len(state.pages),
                  "disk_chunks": len(state.disk)})
    LOG.info("received %s: %s", placement.name, stats)
    return Reception(channel, stats)


def frames(channel):
    """Yield ``(number, kind, data)`` of each frame after the header: SETUP, RECORDS and TAIL
    decompressed, then END as it came, which is the last; an ABORT or another kind raises."""
    number = 0
    while True:
        kind, payload = channel.receive()
        number += 1
        if kind == wire.END:
            yield number, kind, payload
            return
        if kind == wire.ABORT:
            raise wire.PeerFailed(kind, "the source stopped the handoff: %s"
                                  % payload.decode("utf-8", "replace"))
        if kind not in (wire.SETUP, wire.RECORDS, wire.TAIL):
            raise FormatError("unexpected %s frame in a handoff stream" % wire.NAMES[kind])
        yield number, kind, blobcodec.decompress(payload, MAX_PLAIN)


def _image_pieces(channel, state, disk, stats):
    """Yield the memory image's stream while frames arrive; write disk chunks meanwhile.

    After END, everything is checked before the last piece is yielded, and the NBD
    server is stopped (QEMU needs the disk), so a consumer that restores only after the
    last piece never restores an unverified VM.
    """
    nbd = disk.connect()
    try:
        for frame, kind, data in frames(channel):
            if kind == wire.SETUP:
                if state.setup is not None:
                    raise FormatError("handoff stream sends its setup twice")
                state.take_setup(data)
                yield data
            elif kind == wire.RECORDS:
                keys, chunks = state.take_records(data, frame)
                apply.write_chunks(nbd, {i: state.disk[i] for i in chunks})
                if keys:
                    yield from state.ram_section(migstream.SECTION_PART, keys)
            elif kind == wire.TAIL:
                migstream.check_end(data, 0)
                state.tail = data
        stats["end_at"] = time.monotonic()
        if state.setup is None or state.tail is None:
            raise FormatError("handoff stream ended without the memory's setup or device state")
        end = _end_message(data)   # the last frame is END
        if memory_digest(state.setup, state.digests, state.tail) != end["memory_digest"]:
            raise IntegrityError("the received memory state does not match the source's "
                                 "digest")
        nbd.flush()
        apply.check_disk(nbd, state.base, state.disk, end["disk_content_sha256"])
    finally:
        nbd.close()
    disk.stop()
    yield from state.ram_section(migstream.SECTION_END, [])
    yield state.tail


def _end_message(payload):
    try:
        end = msgpack.unpackb(payload)
    except (ValueError, msgpack.UnpackException):
        end = None
    if not isinstance(end, dict) or not isinstance(end.get("memory_digest"), str) or \
            not isinstance(end.get("disk_content_sha256"), str):
        raise FormatError("handoff end frame is damaged")
    return end
