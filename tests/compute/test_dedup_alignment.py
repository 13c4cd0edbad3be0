"""Dedup of memory pages against the customized disk at 512-byte offsets (format v2), on the
synthetic base VM of ``bench/synthetic.py``: no libvirt."""

import os
import random
from array import array

import pytest

from cloudlet_compute import bases
from cloudlet_compute.errors import FormatError
from cloudlet_compute.format import records
from cloudlet_compute.format.records import (CHUNK_SIZE, SOURCE_OVERLAY_DISK, TARGET_DISK,
                                             TARGET_MEMORY)
from cloudlet_compute.format.skeleton import Skeleton
from cloudlet_compute.handoff.destination import _Reassembly
from cloudlet_compute.read.apply import Rebuild
from bench import synthetic
from tests.compute.test_format import rebuild

NEW_CHUNKS = range(20, 24)                     # disk chunks the customization writes
# windows at 512, 1024, 3584 bytes into new chunks, and two reaching into the base chunks
# around them
OFFSETS = (20 * CHUNK_SIZE + 512, 21 * CHUNK_SIZE + 1024, 22 * CHUNK_SIZE + 3584,
           19 * CHUNK_SIZE + 2048, 23 * CHUNK_SIZE + 1536)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("alignment")
    work = root / "work"
    work.mkdir()
    return synthetic.make_base(synthetic.store_at(str(root / "home")), str(work))


def customization():
    """New disk chunks 20-23, and memory pages holding the customized disk at the
    unaligned ``OFFSETS`` (a file of a 512-byte or 1 KiB-block filesystem in the page cache)."""
    rnd = random.Random(5)
    base_pages, base_disk, _, _ = synthetic.world()
    disk = {i: rnd.randbytes(CHUNK_SIZE) for i in NEW_CHUNKS}
    whole = bytearray(base_disk)
    for i, chunk in disk.items():
        whole[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE] = chunk
    pages = dict(base_pages)
    for addr, offset in zip(sorted(base_pages)[:len(OFFSETS)], OFFSETS):
        pages[addr] = bytes(whole[offset:offset + CHUNK_SIZE])
    return pages, disk


@pytest.fixture(scope="module")
def overlays(base, tmp_path_factory):
    """``{unaligned: (meta, path, image, disk)}`` of the same customization, with and without
    the 512-byte windows."""
    root = tmp_path_factory.mktemp("overlays")
    made = {}
    for unaligned in (True, False):
        work = root / str(unaligned)
        work.mkdir()
        out = str(root / ("%s.zip" % unaligned))
        meta, image, disk = synthetic.make_overlay(base, str(work), out, custom=customization(),
                                                   unaligned=unaligned)
        made[unaligned] = meta, out, image, disk
    return made


def test_pages_at_512_byte_offsets_of_the_new_disk_are_not_stored(overlays):
    (on, on_path, _, _), (off, off_path, _, _) = overlays[True], overlays[False]
    assert on["sources"]["overlay_disk"] == len(OFFSETS)
    assert off["sources"]["overlay_disk"] == 0
    assert off["sources"]["raw"] - on["sources"]["raw"] == len(OFFSETS)
    # each literal record (9 + 4096 bytes) became a copy (9 + 8); compared in
    # plaintext because here zstd finds the pages in the disk chunks of the same blob (in
    # a real overlay memory and disk are megabytes apart, in other blobs)
    plain = {u: sum(b["raw_size"] for b in meta["blobs"]) for u, meta in ((1, on), (0, off))}
    assert plain[0] - plain[1] == len(OFFSETS) * (CHUNK_SIZE - 8)
    assert os.path.getsize(on_path) <= os.path.getsize(off_path)


@pytest.mark.parametrize("unaligned", [True, False])
def test_apply_reproduces_memory_and_disk_exactly(base, overlays, unaligned):
    _meta, path, image, disk = overlays[unaligned]
    got_image, got_disk, meta = rebuild(path, base)
    assert meta["version"] == 2
    assert got_image == image
    assert got_disk == disk


def forged_rebuild(base, version):
    rebuild_ = Rebuild(base, {"version": version})
    rebuild_.skeleton = Skeleton(array("Q", [0] * 4), array("q", [-1] * 4), b"")
    return rebuild_


@pytest.mark.parametrize("target, offset, version, message", [
    (TARGET_MEMORY, synthetic.DISK_SIZE - CHUNK_SIZE + 512, 2,
     "refers to overlay disk offset %d, unaligned or beyond the %d-byte disk"
     % (synthetic.DISK_SIZE - CHUNK_SIZE + 512, synthetic.DISK_SIZE)),
    (TARGET_MEMORY, 4096 + 100, 2, "unaligned or beyond"),
    (TARGET_DISK, 512, 2, "a disk chunk cannot copy the overlay's own disk"),
    (TARGET_MEMORY, 512, 1, "which version 1 has not"),
])
def test_forged_overlay_disk_references_are_one_line_errors(base, target, offset, version,
                                                           message):
    builder = records.BlobBuilder()
    builder.add_copy(target, 1, SOURCE_OVERLAY_DISK, offset)
    forged = forged_rebuild(base, version)
    try:
        with pytest.raises(FormatError, match=message) as err:
            forged.apply_blob("blob-00000", bytes(builder.data))
    finally:
        forged.close()
    assert "\n" not in str(err.value)


def test_last_window_of_the_disk_is_accepted(base):
    builder = records.BlobBuilder()
    last = synthetic.DISK_SIZE - CHUNK_SIZE - 512
    builder.add_copy(TARGET_MEMORY, 1, SOURCE_OVERLAY_DISK, last)
    forged = forged_rebuild(base, 2)
    try:
        assert forged.apply_blob("blob-00000", bytes(builder.data)) == 1
        with open(base.disk_path, "rb") as f:
            assert forged._slot_page(1) == os.pread(f.fileno(), CHUNK_SIZE, last)
    finally:
        forged.close()


def test_handoff_refuses_overlay_disk_records(base):
    builder = records.BlobBuilder()
    builder.add_copy(TARGET_MEMORY, 0, SOURCE_OVERLAY_DISK, 512)
    with pytest.raises(FormatError, match="an overlay record, not valid in a handoff"):
        _Reassembly(base, None, None).take_records(bytes(builder.data), 3)


def test_handoff_reads_the_base_disk_at_512_byte_offsets(base):
    builder = records.BlobBuilder()
    builder.add_copy(TARGET_DISK, 0, records.SOURCE_BASE_DISK, 3 * CHUNK_SIZE + 512)
    past_end = records.BlobBuilder()
    past_end.add_copy(TARGET_DISK, 1, records.SOURCE_BASE_DISK, synthetic.DISK_SIZE - 512)
    with bases.BaseDiskChunks(base) as base_disk:
        state = _Reassembly(base, None, base_disk)
        assert state.take_records(bytes(builder.data), 1) == ([], [0])
        with pytest.raises(FormatError, match="base disk offset %d, unaligned or beyond"
                           % (synthetic.DISK_SIZE - 512)):
            state.take_records(bytes(past_end.data), 2)
    with open(base.disk_path, "rb") as f:
        assert state.disk[0] == os.pread(f.fileno(), CHUNK_SIZE, 3 * CHUNK_SIZE + 512)
