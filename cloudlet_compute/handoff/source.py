"""VM handoff, source side (``send``): move a running VM to another host that holds the same
base VM.

In data-flow order: header -> disk chunks written since the base (read
while the guest runs) -> live migration of memory by the VM's own QEMU into a socket of
ours, parsed as it arrives (``migstream.walk``), every page deduplicated against the base
and against what was already sent, compressed (codec and level per batch,
``handoff.adaptive``) and framed while QEMU keeps pre-copying (our
reading speed is the link's, so QEMU's convergence sees the real bandwidth) -> QEMU stops
the guest for the last round -> disk chunks changed since the first pass -> device state ->
digests -> wait for the destination to say the VM runs. Until then nothing is deleted: on
any failure the source guest is resumed.

The other side: ``handoff.destination``. Wire format and channel: ``handoff.wire`` and
``doc/handoff.md``.
"""

import contextlib
import logging
import os
import time

import libvirt
import msgpack

from cloudlet_compute.errors import CloudletError, ConflictError, FetchError, FormatError
from cloudlet_compute.format import blobcodec, migstream, records
from cloudlet_compute.format.records import CHUNK_SIZE, TARGET_DISK, TARGET_MEMORY
from cloudlet_compute.handoff import adaptive, wire
from cloudlet_compute.handoff.protocol import PROTOCOL_VERSION, memory_digest
from cloudlet_compute.host import domains, domxml
from cloudlet_compute.write import capture, dedup, delta

LOG = logging.getLogger(__name__)

FLUSH_BYTES = 512 << 10       # records plaintext per frame
FLUSH_SECONDS = 0.25          # ... or this old, so a slow trickle still moves
RESULT_WAIT = 600.0           # seconds the source waits for the destination's verdict


class _Encoder:
    """Dedups chunks against the base and against what was sent; frames records."""

    def __init__(self, channel, base, chooser):
        """``chooser``: the ``adaptive.Chooser`` of every batch (``adaptive.chooser``)."""
        self.channel = channel
        self.frames = adaptive.FrameSender(channel, chooser, chooser.pipelined)
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
            b.add_copy(target, index, source, ref)
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
    problem = domxml.source_problem(xml)   # what a capture cannot take, a handoff cannot
    if problem:
        raise ConflictError(problem)
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
    chooser = adaptive.chooser(codec, level)   # a bad codec fails here, before anything is sent
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
        encoder = _Encoder(channel, base, chooser)
        try:
            early = delta.disk_delta(disk_path, base, store.tmp_dir).changed
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
        final = delta.disk_delta(disk_path, base, store.tmp_dir)
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
