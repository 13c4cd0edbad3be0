"""Fuzz targets: one function per parser of outside data in the overlay engine.

Each target takes arbitrary bytes and feeds them to the engine the way the engine gets
them from outside. The engine may reject them with its own error (a ``CloudletError``):
that is the only acceptable failure. Any other exception, an absurd allocation (the fuzzing
child runs under an address-space limit) or a hang is a bug. Where a parser accepts its
input, the target also checks what the engine does next with the result (re-encoding,
rebuilding, a second way of reading the same stream), so a silent mis-parse shows too.

``run(name, data)`` is the one entry point: ``"accepted"`` or ``"rejected"``, or the bug's
exception. ``tests/fuzz/run.py`` drives the targets under atheris; ``test_fuzz.py`` replays
the corpus and the regressions.
"""

import atexit
import hashlib
import io
import mmap
import os
import shutil
import socket
import struct
import tempfile
import time
import zipfile

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloudlet_compute import bases
from cloudlet_compute.errors import CloudletError, IntegrityError
from cloudlet_compute.format import blobcodec, meta as metamod, migstream, records, saveimage
from cloudlet_compute.format.package import Package
from cloudlet_compute.format.skeleton import Skeleton
from cloudlet_compute.handoff import destination, wire
from cloudlet_compute.progress import NullProgress
from cloudlet_compute.read import apply
from cloudlet_compute.read.fetch import FileSource
from cloudlet_compute.write import canonical as canonical_writer
from cloudlet_compute.write.spool import FileFeed
from bench import synthetic

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(os.path.dirname(HERE), "compute", "golden", "overlay-v2.zip")
FRAME_KEY = bytes(range(32))          # both directions of the fuzzed handoff channel
DEST_UUID = "6b0d4c1e-2f3a-4b5c-8d9e-0a1b2c3d4e5f"
FAKE_SECRET = bytes(range(32, 64))


class Bug(AssertionError):
    """The engine did something other than accept or reject with its own error."""


def scratch_dir():
    """A new directory in memory where there is a tmpfs: every input becomes a file there."""
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="cloudlet-fuzz-", dir=shm)


class _World:
    """What the targets need around the parsers, made once per process: the synthetic base
    VM (``bench/synthetic.py``, deterministic), the golden overlay's meta and
    skeleton, a store to import base packages into, and an idle handoff listener."""

    def __init__(self):
        self.root = os.environ.get("CLOUDLET_FUZZ_ROOT")   # the runner removes it
        if not self.root:
            self.root = scratch_dir()
            atexit.register(shutil.rmtree, self.root, True)
        work = os.path.join(self.root, "work")
        os.mkdir(work)
        self.store = synthetic.store_at(os.path.join(self.root, "home"))
        self.base = synthetic.make_base(self.store, work)
        self.import_store = bases.BaseStore(os.path.join(self.root, "import-home"))
        with zipfile.ZipFile(GOLDEN) as zf:
            self.meta = metamod.decode(zf.read(metamod.MEMBER_META))
            self.skeleton = Skeleton.decode(
                blobcodec.decompress(zf.read(metamod.MEMBER_SKELETON), 1 << 24),
                self.base.memory_size)
        self._mem_file = open(self.base.memory_path, "rb")
        self.base_mem = mmap.mmap(self._mem_file.fileno(), 0, prot=mmap.PROT_READ)
        self.base_disk = bases.BaseDiskChunks(self.base)
        self.listener = wire.Listener("127.0.0.1", timeout=1.0)
        self.listener.server_uuid = DEST_UUID


_world = None


def world():
    global _world
    if _world is None:
        _world = _World()
    return _world


class CheckedFileSource(FileSource):
    """``fetch.FileSource``, which reads by ``os.pread``: a read of more than 1 GiB is one it
    would fail to allocate, whatever memory this host has."""

    def read(self, start, length):
        if length > 1 << 30:
            raise MemoryError("read of %d bytes at offset %d asked for" % (length, start))
        return super().read(start, length)


class FakeSocket:
    """The receiving end of a connection whose peer sent ``data`` and then closed it."""

    def __init__(self, data):
        self._in = io.BytesIO(data)
        self._timeout = 1.0

    def recv(self, n):
        return self._in.read(n)

    def sendall(self, data):
        pass

    def settimeout(self, value):
        self._timeout = value

    def gettimeout(self):
        return self._timeout

    def shutdown(self, how):
        pass

    def close(self):
        pass


class FakeNBD:
    """A disk reached through NBD, kept in a dict of 4 KiB chunks over the base disk."""

    def __init__(self, base_disk):
        self.base_disk, self.chunks = base_disk, {}

    def connect(self):
        return self

    def write(self, offset, data):
        for i in range(0, len(data), records.CHUNK_SIZE):
            self.chunks[(offset + i) // records.CHUNK_SIZE] = data[i:i + records.CHUNK_SIZE]

    def read(self, offset, length):
        return b"".join(self.chunks.get(i) or self.base_disk.read(i * records.CHUNK_SIZE, "nbd")
                        for i in range(offset // records.CHUNK_SIZE,
                                       (offset + length) // records.CHUNK_SIZE))

    def flush(self):
        pass

    def close(self):
        pass

    def stop(self):
        pass


# --- targets --------------------------------------------------------------------------------
def target_package(data):
    """Overlay package: zip directory (zip64 included), local headers, CRCs, and the meta."""
    path = os.path.join(world().root, "fuzz-overlay.zip")
    with open(path, "wb") as f:
        f.write(data)
    source = CheckedFileSource(path)
    try:
        package = Package(source)
        for name, stored in package.stream_members(sorted(package.members)):
            if stored != package.read_member(name):
                raise Bug("member %s reads differently streamed and by range" % name)
    finally:
        source.close()


def target_meta(data):
    """Overlay meta: msgpack structure, then the checks against the base VM."""
    meta = metamod.decode(data)
    metamod.check_against_base(meta, world().base)


def _rebuild(meta):
    w = world()
    return apply.Rebuild(w.base, meta)


def target_records(data):
    """A blob's plaintext: record structure, then applied against the base and the golden
    skeleton (slot and chunk ranges, base offsets)."""
    listed = list(records.iter_records(data))
    rebuild = _rebuild(world().meta)
    try:
        rebuild.skeleton = world().skeleton
        if rebuild.apply_blob("blob-00000", data) != len(listed):
            raise Bug("apply_blob counts another number of records than iter_records")
    finally:
        rebuild.close()


def target_skeleton(data):
    """Memory skeleton: header, positions and defaults, then the image spliced from it."""
    skeleton = Skeleton.decode(data, world().base.memory_size)
    if skeleton.encode() != bytes(data):
        raise Bug("skeleton does not re-encode to its input")
    meta = dict(world().meta, memory=dict(world().meta["memory"], image_size=skeleton.image_size))
    rebuild, size = _rebuild(meta), 0
    try:
        rebuild.skeleton = skeleton
        for piece in rebuild.memory_stream():
            size += len(piece)
    except IntegrityError:
        pass     # raised after the last piece: the image is not the golden one
    finally:
        rebuild.close()
    if size != skeleton.image_size:
        raise Bug("spliced image is %d bytes, the skeleton says %d" % (size, skeleton.image_size))


def target_blobcodec(data):
    """Codec-prefixed blob: first 3 bytes are the size bound the caller has, the rest the
    blob (id byte + xz/zstd/none stream)."""
    max_size = int.from_bytes(data[:3], "big")
    plain = blobcodec.decompress(data[3:], max_size)
    if len(plain) > max_size:
        raise Bug("decompressed %d bytes, more than the %d allowed" % (len(plain), max_size))


def target_base_package(data):
    """Base package import: zip, manifest.json, members, then the base's memory image and
    disk indexed as registration does (into a scratch store)."""
    store = world().import_store
    path = os.path.join(store.tmp_dir, "fuzz-package.zip")
    with open(path, "wb") as f:
        f.write(data)
    try:
        base = store.import_package(path, progress=NullProgress())
        store.delete(base.id)
    finally:
        os.unlink(path)
        leftovers = os.listdir(store.tmp_dir)
        if leftovers:
            raise Bug("import left %s behind" % leftovers)


def target_saveimage(data):
    """libvirt save image: header and XML, then the QEMU stream after it (as a memory image
    is indexed when a base VM is registered)."""
    header = saveimage.SaveHeader.parse(data)
    again = saveimage.SaveHeader.parse(header.encode())
    if (again.xml, again.cookie) != (header.xml, header.cookie):
        raise Bug("save header does not survive re-encoding")
    migstream.parse(data, header.stream_offset)


def _walk_events(src):
    try:
        return [tuple(event) for event in migstream.walk(src, 0)], None
    except CloudletError as exc:
        return None, str(exc)


def _file_events(data):
    """``_walk_events`` through a ``FileFeed`` with a tiny window that forgets what the
    consumer is done with, as ``delta.memory_delta`` reads it; every payload must still be
    in the window when its event comes, and every byte hashed in order."""
    fd = os.memfd_create("fuzz-stream")
    try:
        os.write(fd, data)
        feed = FileFeed(fd, hashlib.sha256(), piece=7, window=16)
        events = []
        for event in migstream.walk(feed, 0):
            events.append(tuple(event))
            if event[0] == "page" and event[2] >= 0:
                rel = event[2] - feed.origin
                if feed.buf[rel:rel + 4096] != data[event[2]:event[2] + 4096]:
                    raise Bug("page payload at %d left the window too early" % event[2])
                feed.keep = event[2] + 4096
        feed.finish()
        if feed.sha.digest() != hashlib.sha256(data).digest():
            raise Bug("FileFeed hashed other bytes than the file's")
        return events, None
    except CloudletError as exc:
        return None, str(exc)
    finally:
        os.close(fd)


def _rewritten(data):
    fd = os.memfd_create("fuzz-canonical")
    try:
        os.write(fd, data)
        out = io.BytesIO()
        canonical_writer.rewrite("/proc/self/fd/%d" % fd, out)
        return out.getvalue()
    finally:
        os.close(fd)


def target_migstream(data):
    """QEMU migration stream: RAM section parsed whole, as it arrives in small pieces and
    from a file through a sliding window (the three must agree), then rewritten canonically
    and parsed again."""
    whole = _walk_events(migstream._Whole(data))
    feed_in = io.BytesIO(data)
    fed = _walk_events(migstream.StreamFeed(lambda n: feed_in.read(min(n, 7)), piece=7))
    if whole != fed:
        raise Bug("stream parsed whole and fed in pieces disagree: %r / %r"
                  % (whole[1], fed[1]))
    filed = _file_events(data)
    if whole != filed:
        raise Bug("stream parsed whole and from a file window disagree: %r / %r"
                  % (whole[1], filed[1]))
    layout = migstream.parse(data, 0)
    canonical = migstream.canonical(data, 0, layout)
    if _rewritten(data) != canonical:
        raise Bug("canonical.rewrite (file to file) and migstream.canonical disagree")
    again = migstream.parse(canonical, 0)
    pages = lambda lay, buf: {k: (bytes(buf[o:o + 4096]) if o >= 0 else None)  # noqa: E731
                              for k, o in lay.latest.items()}
    if again.blocks != layout.blocks or pages(again, canonical) != pages(layout, data):
        raise Bug("canonical stream holds other pages than the stream it was made from")


def _seal(data):
    """Mode 1 of ``target_handoff_frames``: ``(u8 type, u16 length, plaintext)*`` sealed as
    the source's channel would, so the fuzzer reaches what follows authentication."""
    out, pos, counter = bytearray(), 0, 0
    aead = AESGCM(FRAME_KEY)
    while pos + 3 <= len(data):
        kind, length = struct.unpack_from(">BH", data, pos)
        plain = data[pos + 3:pos + 3 + length]
        pos += 3 + length
        body = aead.encrypt(bytes(4) + struct.pack(">Q", counter), plain, bytes([kind]))
        counter += 1
        out += wire.FRAME_HEAD.pack(kind, len(body)) + body
    return bytes(out)


def target_handoff_frames(data):
    """Handoff destination: frames off the wire, then the frames' contents (header, setup,
    records, tail, end and its digests) as the destination takes them, disk through a fake
    NBD. First byte: 0 = the rest is the raw byte stream, 1 = plaintexts to seal."""
    if not data:
        return
    stream = _seal(data[1:]) if data[0] & 1 else data[1:]
    w = world()
    channel = wire.Channel(FakeSocket(stream), FRAME_KEY, FRAME_KEY, "fuzz")
    destination._expect_header(channel)
    state = destination._Reassembly(w.base, w.base_mem, w.base_disk)
    for _piece in destination._image_pieces(channel, state, FakeNBD(w.base_disk), {}):
        pass


def target_handoff_handshake(data):
    """Handoff handshake, either side, and the ticket a destination is given. First byte:
    0 = the rest is a destination's reply to the source, 1 = a source's hello and MAC to a
    destination, 2 = a ticket (UTF-8 text, undecodable bytes replaced)."""
    if not data:
        return
    mode, rest = data[0] % 3, data[1:4097]
    if mode == 2:
        wire.parse_ticket(rest.decode("utf-8", "replace"))
        return
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(rest)
        theirs.shutdown(socket.SHUT_WR)
        if mode == 0:
            if world().listener._authenticate(ours, "fuzz") is not None:
                raise Bug("the source took a destination that cannot know the secret")
            return "rejected"     # the source refuses by closing the connection
        else:
            wire._greet_source(ours, "fuzz", DEST_UUID, FAKE_SECRET, time.monotonic() + 1.0)
            raise Bug("the destination took a source that cannot know the secret")
    finally:
        ours.close()
        theirs.close()


TARGETS = {name[len("target_"):]: fn for name, fn in sorted(globals().items())
           if name.startswith("target_")}


def run(name, data):
    """Run target ``name`` on ``data``: ``"accepted"``, ``"rejected"`` (an engine error, or
    the target says so), or the bug propagates."""
    try:
        outcome = TARGETS[name](bytes(data))
    except CloudletError as exc:
        message = str(exc)
        if not message or "\n" in message:
            raise Bug("engine error is not one line: %r" % message) from exc
        return "rejected"
    return outcome or "accepted"
