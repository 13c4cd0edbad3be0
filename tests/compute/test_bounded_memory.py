"""Overlay creation in bounded memory (issue 13): the streamed write path (delta -> dedup ->
pack after capture) writes the overlay the in-memory one wrote, byte for byte, and its
peak RSS follows the delta, not the VM's RAM; the capture's file-to-file rewrite of the
stream is ``migstream.canonical``'s. No libvirt (``bench/bigvm.py``)."""

import hashlib
import io
import random
import shutil
from array import array

import msgpack
import pytest

from cloudlet_compute import bases, pagefile
from cloudlet_compute.errors import FormatError
from cloudlet_compute.format import meta as metamod, migstream, records
from cloudlet_compute.format.records import ZERO_DIGEST
from cloudlet_compute.write import canonical, delta, digestindex, pack, spool
from tests.fuzz import make_seeds
from bench import bigvm

# SHA-256 of the overlay of make_pair(16 MiB RAM, 6 MiB memory + 2 MiB disk delta, 8 MiB
# disk, seed 5) with 64 KiB blobs, as the in-memory writer of commit 11e2b9b wrote it.
GOLDEN_SHA256 = "c44046827abdca53eaf9156d6719d529348a46ffd09579144657dd0f9d33e3bb"
MiB = 1 << 20


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounded")
    yield root, bigvm.make_pair(str(root), 16 * MiB, 6 * MiB, 2 * MiB, 8 * MiB, seed=5)
    shutil.rmtree(root)


@pytest.mark.parametrize("windows", ["default", "tiny"])
def test_streamed_writer_reproduces_the_in_memory_writer(pair, windows, monkeypatch, tmp_path):
    """Many blobs, repeats across memory and disk, a literal and its repeats in one blob;
    with tiny windows every read, spool and index piece boundary is crossed too. The meta is
    made a version 1 meta (version number, no ``overlay_disk`` count): nothing else of the
    overlay changed with format version 2 for a VM without such pages."""
    monkeypatch.setattr(pack, "BLOB_TARGET", 64 << 10)
    monkeypatch.setattr(metamod, "FORMAT_VERSION", 1)
    monkeypatch.setattr(pack, "OVERLAY_SOURCES", records.OVERLAY_SOURCES[:-1])
    if windows == "tiny":
        monkeypatch.setattr(spool, "PIECE", 3 * 4096)
        monkeypatch.setattr(spool, "WINDOW", 2 * 4096)
        monkeypatch.setattr(delta, "PIECE", 2 * 4096)
        monkeypatch.setattr(digestindex, "PIECE", 100)
        monkeypatch.setattr(pack, "IN_FLIGHT", 1)
        real = spool.FileFeed.__init__
        monkeypatch.setattr(spool.FileFeed, "__init__", lambda self, fd, sha: real(
            self, fd, sha, piece=5000, window=20000))
    _, vm = pair
    out = tmp_path / "overlay.zip"
    result = bigvm.write_path(vm["home"], vm["base_id"], vm["image"], vm["top"], str(out))
    assert result["output_sha256"] == GOLDEN_SHA256


def test_peak_rss_follows_the_delta_not_the_ram(tmp_path):
    """The same 10 MiB delta over 32 MiB and 256 MiB of RAM: the in-memory writer's peak
    grew by about twice the RAM added (both images mapped), this one's by a few MiB of
    per-page arrays (skeleton positions, base page keys and digests)."""
    peaks = {}
    for ram in (32, 256):
        root = tmp_path / str(ram)
        root.mkdir()
        vm = bigvm.make_pair(str(root), ram * MiB, 8 * MiB, 2 * MiB, 8 * MiB)
        peaks[ram] = bigvm.run_child(vm, str(root / "overlay.zip"))["peak_rss_bytes"]
        shutil.rmtree(root)           # 0.6 GiB of images
    assert peaks[256] - peaks[32] < 24 * MiB, peaks
    assert peaks[256] < 256 * MiB, peaks


def test_base_pages_lookup_keeps_the_last_copy_of_a_resent_page():
    class Base:
        def memory_pages(self, digests=True):
            return ["pc.ram"], array("Q", [5, 1, 9, 1, 3]), array("Q", [50, 10, 90, 11, 30]), None

    lookup = delta.BasePages(Base())
    assert [lookup.offset(k) for k in (0, 1, 3, 5, 9, 10)] == [-1, 11, 30, 50, 90, -1]


@pytest.mark.parametrize("piece", [digestindex.PIECE, 7])
def test_digest_index_finds_the_first_equal_digest(piece, monkeypatch, tmp_path):
    monkeypatch.setattr(digestindex, "PIECE", piece)
    rnd = random.Random(3)
    distinct = [hashlib.sha256(bytes([i])).digest() for i in range(40)] + [ZERO_DIGEST]
    digests = [rnd.choice(distinct) for _ in range(300)]
    path = tmp_path / "digests"
    path.write_bytes(b"".join(digests))
    in_memory = digestindex.DigestIndex.of_bytes(b"".join(digests))
    on_disk = digestindex.DigestIndex.of_file(str(path), skip=ZERO_DIGEST)
    for digest in distinct + [hashlib.sha256(b"absent").digest()]:
        first = digests.index(digest) if digest in digests else None
        assert in_memory.find(digest) == first
        assert on_disk.find(digest) == (None if digest == ZERO_DIGEST else first)


@pytest.mark.parametrize("window", [8 << 20, 64])
def test_rewrite_writes_the_canonical_stream(window, monkeypatch, tmp_path):
    """A live stream (two blocks; a page re-sent, one re-sent as zeros, one never sent),
    rewritten file to file, is what ``migstream.canonical`` makes of it in memory."""
    real = spool.FileFeed.__init__
    monkeypatch.setattr(spool.FileFeed, "__init__", lambda self, fd, sha: real(
        self, fd, sha, piece=100, window=window))
    rnd = random.Random(5)
    blocks = [(b"pc.ram", 6), (b"vga.vram", 3)]
    pages = {(b, i): rnd.randbytes(4096) for b, (_, n) in enumerate(blocks) for i in range(n)
             if (b, i) != (0, 2)}
    seed = make_seeds.tiny_stream(blocks, pages)
    layout = migstream.parse(seed, 0)
    names, sid = layout.block_names(), layout.section_id
    key = lambda b, i: b << 48 | i * 4096   # noqa: E731
    first = [(key(b, i), pages.get((b, i))) for b, n in ((0, 5), (1, 3)) for i in range(n)]
    again = [(key(0, 1), None), (key(1, 0), rnd.randbytes(4096)), (key(0, 3), pages[(1, 1)])]
    stream = b"".join([seed[:layout.setup_end],
                       *migstream.ram_section(migstream.SECTION_PART, sid, names, first),
                       *migstream.ram_section(migstream.SECTION_END, sid, names, again),
                       seed[layout.ram_end:]])
    path = tmp_path / "stream"
    path.write_bytes(stream)
    out = io.BytesIO()
    canonical.rewrite(str(path), out)
    expected = migstream.canonical(stream, 0, migstream.parse(stream, 0))
    assert out.getvalue() == expected
    latest = migstream.parse(expected, 0).latest
    assert latest[key(0, 1)] == -1 and key(0, 5) not in latest and len(latest) == 8


@pytest.mark.parametrize("cut", [0, 10, 91, 200, 70000, 5 * MiB + 3, -5000, -30, -1])
def test_streamed_delta_of_a_truncated_image_is_a_format_error(pair, cut, tmp_path):
    _, vm = pair
    with open(vm["image"], "rb") as f:
        data = f.read()
    path = tmp_path / "cut.img"
    path.write_bytes(data[:cut])
    base = bases.BaseStore(vm["home"]).get(vm["base_id"])
    with pytest.raises(FormatError):
        delta.memory_delta(str(path), base, str(tmp_path))
    path.unlink()


def test_page_file_reads_what_msgpack_wrote(tmp_path):
    pages = {"blocks": ["pc.ram", "vga"], "keys": bytes(range(256)) * 300, "n": 7,
             "offsets": b"", "digests": b"\x01" * 70000}
    path = tmp_path / "memory.pages"
    path.write_bytes(msgpack.packb(pages))
    assert pagefile.read(str(path)) == pages
    assert pagefile.read(str(path), skip=("keys",)) == dict(pages, keys=None)
    whole = msgpack.packb(pages)
    for cut in (0, 3, 10, len(whole) - 70004, len(whole) - 70001, len(whole) - 10):
        path.write_bytes(whole[:cut])
        with pytest.raises(FormatError):
            pagefile.read(str(path))
