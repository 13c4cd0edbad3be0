"""The overlay format without libvirt: golden file, codecs, records, meta, and fuzzing.

A synthetic base VM and customization (``bench/synthetic.py``) exercise every
record source. ``golden/overlay-vN.zip`` freezes format version N: today's writer must
produce the current version's byte for byte, and today's reader must rebuild the customized
VM of each version's world from its file (old overlays still synthesize).
"""

import json
import os
import random
import shutil
import subprocess
import sys
import zipfile

import msgpack
import pytest

from cloudlet_compute.errors import CloudletError, FormatError
from cloudlet_compute.format import blobcodec, meta as metamod, records
from cloudlet_compute.format.package import Package
from cloudlet_compute.progress import NullProgress
from cloudlet_compute.read import overlayinfo
from cloudlet_compute.read.fetch import FileSource
from cloudlet_compute.read.synthesis import read_overlay
from bench import synthetic

GOLDEN_V1, GOLDEN = (os.path.join(os.path.dirname(__file__), "golden", "overlay-v%d.zip" % v)
                     for v in (1, metamod.FORMAT_VERSION))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Reads the golden overlay's meta with libvirt made unimportable: the reader the clients use
# (and both command lines, over the whole client core) must not load libvirt.
NO_LIBVIRT_INFO = """
import json, sys
sys.modules["libvirt"] = sys.modules["libvirt_qemu"] = None
from cloudlet_compute.read import overlayinfo
import client.cloudlet_client, client.osc.base, client.osc.handoff, client.osc.overlay
import client.osc.synthesis
print(json.dumps(overlayinfo.info(sys.argv[1], sys.argv[2])))
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    work = root / "work"
    work.mkdir()
    base = synthetic.make_base(synthetic.store_at(str(root / "home")), str(work))
    out = str(root / "overlay.zip")
    meta, image, disk = synthetic.make_overlay(base, str(work), out)
    return base, out, meta, image, disk


def rebuild(path, base):
    source = FileSource(path)
    try:
        package = Package(source)
        metamod.check_against_base(package.meta, base)
        result = read_overlay(package, base, NullProgress())
        try:
            return result.memory_image(), dict(result.disk), package.meta
        finally:
            result.close()
    finally:
        source.close()


def test_every_record_source_is_used(world):
    _base, _out, meta, _image, _disk = world
    assert all(count > 0 for count in meta["sources"].values()), meta["sources"]


def test_writer_reproduces_the_golden_file(world):
    with open(world[1], "rb") as new, open(GOLDEN, "rb") as golden:
        assert new.read() == golden.read(), "format v2 changed: bump the version, add a golden"


def test_overlay_info_reads_the_golden_meta_without_libvirt(tmp_path):
    r = subprocess.run([sys.executable, "-c", NO_LIBVIRT_INFO, GOLDEN, str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    meta, size = json.loads(r.stdout)
    assert size == os.path.getsize(GOLDEN)
    assert meta == json.loads(json.dumps(overlayinfo.info(GOLDEN, str(tmp_path))[0]))
    assert meta["version"] == metamod.FORMAT_VERSION


@pytest.mark.parametrize("version", [1, 2])
def test_golden_file_rebuilds_the_customized_vm(world, version):
    base = world[0]
    _, _, pages, disk = synthetic.world(version=version)
    got_image, got_disk, meta = rebuild(GOLDEN_V1 if version == 1 else GOLDEN, base)
    assert meta["version"] == version
    assert got_image == synthetic.memory_image(pages)
    assert got_disk == disk


@pytest.mark.parametrize("codec", sorted(blobcodec.NAMES))
@pytest.mark.parametrize("data", [b"", b"x", bytes(10000), os.urandom(70000)])
def test_codec_round_trip(codec, data):
    stored = blobcodec.compress(data, codec)
    assert stored[0] == codec
    assert blobcodec.decompress(stored, len(data)) == data
    if data:
        with pytest.raises(FormatError):
            blobcodec.decompress(stored, len(data) - 1)


def test_unknown_codec_id_is_rejected():
    with pytest.raises(FormatError, match="unknown codec id 9"):
        blobcodec.decompress(b"\x09abc", 10)


def test_records_round_trip():
    builder = records.BlobBuilder()
    chunk = os.urandom(records.CHUNK_SIZE)
    at = builder.add_raw(records.TARGET_MEMORY, 5, chunk)
    builder.add_zero(records.TARGET_DISK, 7)
    builder.add_copy(records.TARGET_DISK, 8, records.SOURCE_BASE_MEM, 4096 * 3)
    builder.add_self(records.TARGET_DISK, 9, at)
    got = [(t, i, s, bytes(v) if isinstance(v, memoryview) else v)
           for t, i, s, v in records.iter_records(bytes(builder.data))]
    assert got == [(records.TARGET_MEMORY, 5, records.SOURCE_RAW, chunk),
                   (records.TARGET_DISK, 7, records.SOURCE_ZERO, None),
                   (records.TARGET_DISK, 8, records.SOURCE_BASE_MEM, 4096 * 3),
                   (records.TARGET_DISK, 9, records.SOURCE_SELF, chunk)]


@pytest.mark.parametrize("plain, message", [
    (b"\x10" + bytes(8) + b"short", "raw record truncated"),
    (b"\x30" + bytes(8), "unknown record kind"),
    (b"\x14" + bytes(8) + b"\x09\x00\x00\x00", "not an earlier literal"),
    (b"\x12" + bytes(3), "record header truncated"),
])
def test_bad_records(plain, message):
    with pytest.raises(FormatError, match=message):
        list(records.iter_records(plain))


def test_resolver_serves_overlays_and_handoff_streams():
    """One resolver: short forms, the bytes they stand for, the caller's base-offset check,
    PRIOR only where the caller resolves it (a handoff stream, never an overlay)."""
    base_mem = bytes(range(256)) * 64                       # four pages

    def within(offset, where):
        if offset + records.CHUNK_SIZE > len(base_mem):
            raise FormatError("%s: offset %d beyond the base" % (where, offset))

    class Disk:
        def read(self, offset, where):
            return b"d" * records.CHUNK_SIZE
    overlay = records.Resolver(base_mem, within, Disk())
    raw = memoryview(b"r" * records.CHUNK_SIZE)
    assert overlay.resolve(records.SOURCE_RAW, raw, "r1") == bytes(raw)
    assert overlay.resolve(records.SOURCE_ZERO, None, "r2") is None
    assert overlay.chunk(None) == records.ZERO_CHUNK
    assert overlay.resolve(records.SOURCE_BASE_MEM, 8192, "r3") == 8192
    assert overlay.chunk(8192) == base_mem[8192:8192 + records.CHUNK_SIZE]
    assert overlay.resolve(records.SOURCE_BASE_DISK, 0, "r4") == b"d" * records.CHUNK_SIZE
    with pytest.raises(FormatError, match="^r5: offset 16384 beyond the base$"):
        overlay.resolve(records.SOURCE_BASE_MEM, 16384, "r5")
    with pytest.raises(FormatError, match="^r6 is a handoff-stream record, not valid in an "
                                          "overlay$"):
        overlay.resolve(records.SOURCE_PRIOR, (records.TARGET_MEMORY, 1), "r6")
    held = records.Resolver(base_mem, within, Disk(), prior=lambda ref, where: ref[1])
    assert held.resolve(records.SOURCE_PRIOR, (records.TARGET_DISK, 7), "r7") == 7


def good_meta(world):
    with zipfile.ZipFile(world[1]) as zf:
        return msgpack.unpackb(zf.read("overlay-meta"))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("disk"), "disk is missing"),
    (lambda m: m.update(version=3), "version 3 is not supported"),
    (lambda m: m.update(format="other"), "not an OpenStack"),
    (lambda m: m["blobs"][0].update(member="../x"), "expected 'blob-00000'"),
    (lambda m: m["memory"].update(image_size=-1), "negative"),
    (lambda m: m["memory"].update(image_sha256="zz"), "not a sha256"),
    (lambda m: m["blobs"][0].update(raw_size=1 << 40), "more than"),
    (lambda m: m.update(chunk_size=True), "chunk_size is missing or not a int"),
])
def test_meta_checks(world, change, message):
    meta = good_meta(world)
    change(meta)
    with pytest.raises(FormatError, match=message):
        metamod.decode(msgpack.packb(meta))


def mutate(data, rnd):
    data = bytearray(data)
    kind = rnd.randrange(4)
    if kind == 0:
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    elif kind == 1:
        del data[rnd.randrange(len(data)):]
    elif kind == 2:
        pos = rnd.randrange(len(data))
        data[pos:pos] = os.urandom(rnd.randint(1, 64))
    else:
        pos = rnd.randrange(len(data))
        del data[pos:pos + rnd.randint(1, 64)]
    return bytes(data)


def test_fuzz_mutated_overlays_fail_cleanly(world, tmp_path):
    """Every mutation is either harmless or a CloudletError: never a crash, never a wrong VM."""
    base, _out, _meta, image, disk = world
    with open(GOLDEN, "rb") as f:
        golden = f.read()
    rnd = random.Random(2026)
    outcomes = {"rejected": 0, "accepted": 0}
    for i in range(300):
        path = tmp_path / ("m%d.zip" % i)
        path.write_bytes(mutate(golden, rnd))
        try:
            got_image, got_disk, _ = rebuild(str(path), base)
        except CloudletError:
            outcomes["rejected"] += 1
        else:
            outcomes["accepted"] += 1
            assert got_image == image and got_disk == disk
        path.unlink()
    assert outcomes["rejected"] > 250, outcomes
    shutil.rmtree(tmp_path, ignore_errors=True)
