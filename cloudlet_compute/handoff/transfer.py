"""VM handoff: move a running VM to another host that holds the same base VM.

Source (``send``), in data-flow order: header -> disk chunks written since the base (read
while the guest runs) -> live migration of memory by the VM's own QEMU into a socket of
ours, parsed as it arrives (``migstream.walk``), every page deduplicated against the base
and against what was already sent, compressed (codec and level per batch,
``handoff.adaptive``) and framed while QEMU keeps pre-copying (our
reading speed is the link's, so QEMU's convergence sees the real bandwidth) -> QEMU stops
the guest for the last round -> disk chunks changed since the first pass -> device state ->
digests -> wait for the destination to say the VM runs. Until then nothing is deleted: on
any failure the source guest is resumed.

Destination (``receive``): frames -> pages and chunks, latest copy wins -> memory and disk
digests checked -> disk written over the local base, memory image rebuilt with each page
once (``migstream.write_canonical``) -> restore. The caller then reports ``running`` or
``failed`` to the source through the returned ``Reception``.

Wire format and channel: ``handoff.wire`` and ``doc/handoff.md``.
"""

import contextlib
import hashlib
import logging
import mmap
import os
import struct
import time

import libvirt
import msgpack

from cloudlet_compute import bases
from cloudlet_compute.errors import (CloudletError, ConflictError, FetchError, FormatError,
                                     IntegrityError, NotFoundError)
from cloudlet_compute.format import blobcodec, migstream, records, saveimage
from cloudlet_compute.format.records import (CHUNK_SIZE, TARGET_DISK, TARGET_MEMORY, ZERO_CHUNK,
                                             ZERO_DIGEST)
from cloudlet_compute.handoff import adaptive, wire
from cloudlet_compute.host import domains, domxml, instances
from cloudlet_compute.host.nbd import NBDServer
from cloudlet_compute.read import apply
from cloudlet_compute.write import capture, dedup, delta

LOG = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
FLUSH_BYTES = 512 << 10       # records plaintext per frame
FLUSH_SECONDS = 0.25          # ... or this old, so a slow trickle still moves
MAX_PLAIN = 64 << 20          # bound on any frame's decompressed size
RESULT_WAIT = 600.0           # seconds the source waits for the destination's verdict
KEY = struct.Struct(">Q")


def memory_digest(setup, page_digests, tail):
    """Digest of a VM's memory state: the stream's setup, the SHA-256 of the latest copy of
    every guest page (zeros included) in address order, and its device state."""
    h = hashlib.sha256(b"openstackpp-memory-state-v1")
    h.update(hashlib.sha256(setup).digest())
    for key in sorted(page_digests):
        h.update(KEY.pack(key))
        h.update(page_digests[key])
    h.update(hashlib.sha256(tail).digest())
    return h.hexdigest()


# --- source ---------------------------------------------------------------------------------
class _Encoder:
    """Dedups chunks against the base and against what was sent; frames records."""

    def __init__(self, channel, base, codec=adaptive.AUTO, level=None, pipelined=True):
        self.channel = channel
        self.frames = adaptive.FrameSender(channel, adaptive.chooser(codec, level, pipelined),
                                           pipelined)
        self.matcher = dedup.BaseMatcher(base)
        self.sent = {TARGET_MEMORY: {}, TARGET_DISK: {}}   # index -> digest of the latest
        self.held = {}      # digest -> (target, index) of a chunk the receiver holds now
        self.sources = dict.fromkeys(records.SOURCE_NAMES.values(), 0)
        self.skipped = 0
        self._new_builder()

    def _new_builder(self):
        self.builder, self.literals, self.started = records.BlobBuilder(), {}, None
        self.work = 0.0     # seconds add() spent on this batch (the chooser's "produce")

    def add(self, target, index, data):
        """Queue chunk ``index`` of ``target`` (``data`` None: zeros); skip it if the
        destination already has these bytes there."""
        t = time.perf_counter()
        digest, source, ref = self.matcher.classify(data)
        sent = self.sent[target]
        old = sent.get(index)
        if old == digest:
            self.skipped += 1
            self.work += time.perf_counter() - t
            return
        if old is not None and self.held.get(old) == (target, index):
            del self.held[old]   # the receiver's copy of those bytes is being overwritten
        sent[index] = digest
        b = self.builder
        if source == records.SOURCE_ZERO:
            b.add_zero(target, index)
        elif source is not None:
            b.add_base(target, index, source, ref)
        elif digest in self.literals:
            b.add_self(target, index, self.literals[digest])
            source = records.SOURCE_SELF
        elif digest in self.held:
            b.add_prior(target, index, *self.held[digest])
            source = records.SOURCE_PRIOR
        else:
            self.literals[digest] = b.add_raw(target, index, data)
            source = records.SOURCE_RAW
        if source in (records.SOURCE_RAW, records.SOURCE_SELF, records.SOURCE_PRIOR):
            self.held.setdefault(digest, (target, index))
        self.sources[records.SOURCE_NAMES[source]] += 1
        now = time.monotonic()
        if self.started is None:
            self.started = now
        self.work += time.perf_counter() - t
        if len(b) >= FLUSH_BYTES or now - self.started >= FLUSH_SECONDS:
            self.flush()

    def flush(self):
        """Compress the queued records as one frame (codec and level from the chooser) and
        queue it for the sender thread."""
        if self.builder.records:
            self.channel.check_peer()
            self.frames.records(wire.RECORDS, bytes(self.builder.data), self.work)
            self._new_builder()

    def frame(self, kind, payload):
        """Send one frame of another kind, in order with the records."""
        self.frames.frame(kind, payload)

    def finish(self):
        """Wait until every frame is on the wire; return the compression figures."""
        stats = self.frames.finish()
        LOG.info("handoff compression: %s", stats)
        return stats

    def abort(self):
        """Stop sending (a failure): the caller may then use the channel itself."""
        self.frames.abort()


def _handoff_disk(xml):
    disk_path, disk_format = domxml.file_disk(xml)
    base_id = domxml.base_id_of(xml)
    if base_id is None or disk_format != "qcow2":
        raise ConflictError("the domain was not made from a base VM (no cloudlet metadata, or "
                            "its disk is not a qcow2 over the base), so it cannot be handed off")
    return disk_path, base_id


def _stream_memory(dom, encoder, progress, ram_pages):
    """Pre-copy the guest's memory through ``encoder``; return (setup, tail, QEMU info).
    On return the guest is stopped by QEMU (migration completed)."""
    pages = 0
    with capture.live_migration(dom) as ours:
        feed = migstream.StreamFeed(ours.recv)
        try:
            for event in migstream.walk(feed, 0):
                if event[0] == "page":
                    _, key, pos = event
                    encoder.add(TARGET_MEMORY, key,
                                None if pos < 0 else bytes(feed.buf[pos:pos + CHUNK_SIZE]))
                    pages += 1
                    if progress and pages % 4096 == 0:
                        progress(min(0.95, pages / ram_pages))
                elif event[0] == "setup":
                    setup = bytes(feed.buf[:event[3]])
                    encoder.frame(wire.SETUP, blobcodec.compress(setup))
                else:
                    ram_end = event[1]
            feed.finish()
        except FormatError:
            # QEMU ended the stream early: its own reason is the better one.
            capture.migration_outcome(dom, wait=5.0)
            raise
        encoder.flush()
    info = capture.migration_outcome(dom)
    migstream.check_end(feed.buf, ram_end)
    return setup, bytes(feed.buf[ram_end:]), info


def send(conn, store, domain_name, channel, progress=None, codec=adaptive.AUTO,
         level=None, result_wait=RESULT_WAIT):
    """Hand running domain ``domain_name`` off through ``channel`` (an authenticated
    ``wire.Channel`` to the destination).

    ``codec``: ``auto`` (each batch's codec and level chosen from the measured link and
    compression speeds, ``handoff.adaptive``), or one forced for every batch: a name of
    ``adaptive.parse`` (``zstd-3``, ``xz-6``, ``none``) or a ``blobcodec`` id with ``level``.

    Returns stats once the destination reports the VM running; the source domain is then
    left stopped (paused) for the caller to remove. On any failure the source guest runs
    again as before and the error propagates.
    """
    adaptive.chooser(codec, level)   # a bad codec fails here, before anything is sent
    dom = domains.lookup(conn, domain_name)
    if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
        raise ConflictError("domain %s is not running" % domain_name)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE)
    disk_path, base_id = _handoff_disk(xml)
    base = store.get(base_id)
    t0 = time.monotonic()
    stats, encoder = {}, None
    try:
        channel.send(wire.HEADER, msgpack.packb({
            "version": PROTOCOL_VERSION, "base_vm_sha256": base.id,
            "base_memory_sha256": base.memory_sha256, "disk_size": base.disk_size,
            "xml": xml}))
        encoder = _Encoder(channel, base, codec, level)
        try:
            early = delta.disk_delta(disk_path, base).changed
        except CloudletError as exc:   # the image moved under us; the final pass covers it
            LOG.info("first disk pass of %s skipped: %s", domain_name, exc)
            early = []
        for index, data in early:
            encoder.add(TARGET_DISK, index, data)
        encoder.flush()
        stats["disk_early_chunks"] = len(early)
        setup, tail, info = _stream_memory(dom, encoder, progress,
                                           max(1, base.ram_size // CHUNK_SIZE))
        stopped = time.monotonic()
        final = delta.disk_delta(disk_path, base)
        changed = dict(final.changed)
        with open(base.disk_path, "rb") as base_disk:
            for index in sorted(set(encoder.sent[TARGET_DISK]) - set(changed)):
                changed[index] = os.pread(base_disk.fileno(), CHUNK_SIZE, index * CHUNK_SIZE)
        for index in sorted(changed):
            encoder.add(TARGET_DISK, index, changed[index])
        encoder.flush()
        encoder.frame(wire.TAIL, blobcodec.compress(tail))
        encoder.frame(wire.END, msgpack.packb({
            "memory_digest": memory_digest(setup, encoder.sent[TARGET_MEMORY], tail),
            "disk_content_sha256": final.content_sha256,
            "pages": len(encoder.sent[TARGET_MEMORY])}))
        stats["compression"] = encoder.finish()
        if progress:
            progress(0.97)
        channel.sock.settimeout(result_wait)
        kind, payload = channel.receive()
        if kind != wire.RUNNING:
            raise wire.PeerFailed(kind, payload.decode("utf-8", "replace"))
    except BaseException as exc:
        if encoder is not None:
            encoder.abort()   # the sender thread stops before this thread uses the channel
        if isinstance(exc, FetchError):   # a frame saying why may be waiting
            with contextlib.suppress(CloudletError, OSError):
                channel.sock.settimeout(2.0)
                kind, payload = channel.receive()
                exc = wire.PeerFailed(kind, payload.decode("utf-8", "replace"))
        channel.end_with(wire.ABORT, exc)
        capture.resume_guest(dom)
        LOG.warning("handoff of %s failed, the guest runs here again: %s", domain_name, exc)
        if isinstance(exc, wire.PeerFailed):
            raise CloudletError("the destination could not take the VM: %s" % exc) from None
        raise
    channel.close()
    stats.update({
        "total": time.monotonic() - t0, "bytes_sent": channel.bytes_sent,
        "downtime_to_verdict": time.monotonic() - stopped + info.get("downtime", 0) / 1000.0,
        "qemu_downtime_ms": info.get("downtime", 0),
        "iterations": info.get("ram", {}).get("dirty-sync-count"),
        "pages_sent": sum(encoder.sources.values()) - encoder.sources.get("zero", 0),
        "sources": encoder.sources, "skipped_unchanged": encoder.skipped})
    LOG.info("handed off %s: %s", domain_name, stats)
    return stats


# --- destination ----------------------------------------------------------------------------
class _Reassembly:
    """The VM state as frames bring it: latest copy of every page and disk chunk."""

    def __init__(self, base, base_mem, base_disk):
        self.base, self.base_mem, self.base_disk = base, base_mem, base_disk
        _blocks, _keys, offsets, digests = base.memory_pages()
        self.digest_at = {offset: digests[32 * i:32 * i + 32] for i, offset in enumerate(offsets)}
        self.pages, self.digests, self.disk = {}, {}, {}
        self.setup = self.tail = None
        self.blocks = self.section_id = None
        self.disk_chunks = base.disk_size // CHUNK_SIZE

    def take_setup(self, setup):
        """The stream's header, configuration and RAM setup."""
        self.blocks, self.section_id, end = migstream.parse_setup(setup)
        if end != len(setup):
            raise FormatError("handoff setup holds %d bytes after the RAM setup"
                              % (len(setup) - end))
        self.setup = setup

    def _base_bytes(self, source, value, where):
        if source == records.SOURCE_BASE_MEM:
            if value not in self.digest_at:
                raise FormatError("%s refers to base memory offset %d, which is not a page of "
                                  "the base" % (where, value))
            return value
        return self.base_disk.read(value, where)

    def _held(self, ref, where):
        target, index = ref
        held = self.disk if target == TARGET_DISK else self.pages
        if index not in held:
            raise FormatError("%s copies chunk %#x, which was never sent" % (where, index))
        return self.base_mem_page(held[index]) if target == TARGET_MEMORY else held[index]

    def take_records(self, plain, frame):
        """Apply one RECORDS frame; return the guest page keys (in order) and the disk chunk
        indexes it wrote."""
        keys, chunks = [], []
        for n, (target, index, source, value) in enumerate(records.iter_records(plain)):
            where = "frame %d record %d" % (frame, n)
            if source in (records.SOURCE_RAW, records.SOURCE_SELF):
                data = bytes(value)
            elif source == records.SOURCE_ZERO:
                data = None
            elif source == records.SOURCE_PRIOR:
                data = self._held(value, where)
            else:
                data = self._base_bytes(source, value, where)
            if target == TARGET_DISK:
                if index >= self.disk_chunks:
                    raise FormatError("%s targets disk chunk %d of %d" % (where, index,
                                                                         self.disk_chunks))
                self.disk[index] = bytes(self.base_mem_page(data))
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

    def base_mem_page(self, data):
        """The 4096 bytes that page value ``data`` stands for."""
        if data is None:
            return ZERO_CHUNK
        if isinstance(data, int):
            return self.base_mem[data:data + CHUNK_SIZE]
        return data

    def ram_section(self, kind, keys):
        """One RAM section of the rebuilt stream sending the current bytes of ``keys``."""
        pages = ((key, None if self.pages[key] is None else self.base_mem_page(self.pages[key]))
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


def _image_pieces(channel, state, disk, stats):
    """Yield the memory image's stream while frames arrive; write disk chunks meanwhile.

    After END, everything is checked before the last piece is yielded, and the NBD
    server is stopped (QEMU needs the disk), so a consumer that restores only after the
    last piece never restores an unverified VM.
    """
    nbd = disk.connect()
    try:
        frame = 0
        while True:
            kind, payload = channel.receive()
            frame += 1
            if kind == wire.END:
                break
            if kind == wire.ABORT:
                raise wire.PeerFailed(kind, "the source stopped the handoff: %s"
                                      % payload.decode("utf-8", "replace"))
            if kind not in (wire.SETUP, wire.RECORDS, wire.TAIL):
                raise FormatError("unexpected %s frame in a handoff stream" % wire.NAMES[kind])
            plain = blobcodec.decompress(payload, MAX_PLAIN)
            if kind == wire.SETUP:
                if state.setup is not None:
                    raise FormatError("handoff stream sends its setup twice")
                state.take_setup(plain)
                yield plain
            elif kind == wire.RECORDS:
                keys, chunks = state.take_records(plain, frame)
                apply.write_chunks(nbd, {i: state.disk[i] for i in chunks})
                if keys:
                    yield from state.ram_section(migstream.SECTION_PART, keys)
            else:
                migstream.check_end(plain, 0)
                state.tail = plain
        stats["end_at"] = time.monotonic()
        if state.setup is None or state.tail is None:
            raise FormatError("handoff stream ended without the memory's setup or device state")
        end = _end_message(payload)
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
