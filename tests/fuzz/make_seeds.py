"""Write the seed corpora under ``tests/fuzz/corpus/<target>/`` (committed; deterministic).

``python -m tests.fuzz.make_seeds``. Seeds are small valid inputs, taken from the golden
overlay (``tests/compute/golden/overlay-v2.zip``) and shrunk, or built with the engine's
own writers on tiny memory images, so the fuzzer starts from the paths valid input takes.
"""

import hashlib
import io
import json
import os
import random
import shutil
import struct
import zipfile
from array import array

import msgpack

from cloudlet_compute.format import blobcodec, meta as metamod, migstream, records
from cloudlet_compute.format.records import CHUNK_SIZE, TARGET_DISK, TARGET_MEMORY
from cloudlet_compute.format.saveimage import SaveHeader
from cloudlet_compute.format.skeleton import Skeleton
from cloudlet_compute.handoff import destination, protocol, wire
from cloudlet_compute.write.delta import content_sha256
from tests.fuzz import targets

CORPUS = os.path.join(targets.HERE, "corpus")
XML = "<domain type='qemu'><name>seed</name></domain>"


def _be32(v):
    return struct.pack(">I", v)


def _be64(v):
    return struct.pack(">Q", v)


def tiny_stream(blocks, pages, resend=()):
    """A QEMU stream: ``blocks`` [(name, pages)], ``pages`` {(block, index): 4096 bytes}
    (others zero), then ``resend`` pages again in a second section."""
    total = sum(n for _, n in blocks) * CHUNK_SIZE
    out = bytearray(b"QEVM" + _be32(3) + b"\x07" + _be32(2) + b"pc")
    out += b"\x01" + _be32(2) + b"\x03ram" + _be32(0) + _be32(4) + _be64(total | 0x04)
    for name, n in blocks:
        out += bytes([len(name)]) + name + _be64(n * CHUNK_SIZE)
    out += _be64(0x10) + b"\x7e" + _be32(2)
    out += b"\x02" + _be32(2)
    for b, (name, n) in enumerate(blocks):
        for i in range(n):
            head = (i * CHUNK_SIZE) | (0x20 if i else 0)
            named = b"" if i else bytes([len(name)]) + name
            page = pages.get((b, i))
            out += _be64(head | (0x08 if page else 0x02)) + named + (page or b"\0")
    out += _be64(0x10) + b"\x7e" + _be32(2) + b"\x03" + _be32(2)
    for b, i in resend:
        name = blocks[b][0]
        out += _be64(i * CHUNK_SIZE | 0x08) + bytes([len(name)]) + name + pages[(b, i)]
    out += _be64(0x10) + b"\x7e" + _be32(2)
    vmdesc = json.dumps({"page_size": CHUNK_SIZE, "devices": []}).encode()
    out += b"\x04dev" + b"\x00\x06" + _be32(len(vmdesc)) + vmdesc
    return bytes(out)


def save_image(stream, cookie="<cookie/>"):
    used = len(XML) + 1 + (len(cookie) + 1 if cookie else 0)
    return SaveHeader(XML, cookie, data_len=used).encode() + stream


def _golden():
    with zipfile.ZipFile(targets.GOLDEN) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _zip(members, compression=zipfile.ZIP_STORED, zip64=False):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression, allowZip64=True) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            with zf.open(info, "w", force_zip64=zip64) as f:
                f.write(data)
    return out.getvalue()


def seeds():
    """``{target: {file name: bytes}}``."""
    rnd = random.Random(16)
    noise = lambda: bytes(rnd.getrandbits(8) for _ in range(CHUNK_SIZE))  # noqa: E731
    golden = _golden()
    golden_meta = msgpack.unpackb(golden[metamod.MEMBER_META])
    skeleton_plain = blobcodec.decompress(golden[metamod.MEMBER_SKELETON], 1 << 24)
    blob_plain = blobcodec.decompress(golden["blob-00000"], 1 << 24)
    page = noise()
    one = tiny_stream([(b"pc.ram", 4)], {(0, 1): page})
    two = tiny_stream([(b"pc.ram", 3), (b"vga.vram", 2)], {(0, 0): page, (1, 1): noise()},
                      resend=[(0, 0)])
    out = {}

    small_meta = dict(golden_meta, blobs=golden_meta["blobs"][:1])
    out["package"] = {
        "golden.zip": open(targets.GOLDEN, "rb").read(),
        "tiny.zip": _zip([(metamod.MEMBER_SKELETON, b"\x00skeleton"), ("blob-00000", b"\x00blob"),
                          (metamod.MEMBER_META, metamod.encode(small_meta))]),
        "tiny-zip64.zip": _zip([(metamod.MEMBER_SKELETON, b"\x00s"), ("blob-00000", b"\x00b"),
                                (metamod.MEMBER_META, metamod.encode(small_meta))], zip64=True),
    }
    two_blobs = dict(golden_meta, blobs=[golden_meta["blobs"][0],
                                         dict(golden_meta["blobs"][0], member="blob-00001")])
    out["meta"] = {"golden": golden[metamod.MEMBER_META], "two-blobs": metamod.encode(two_blobs)}

    builder = records.BlobBuilder()
    at = builder.add_raw(TARGET_MEMORY, 1, page)
    builder.add_zero(TARGET_DISK, 2)
    builder.add_copy(TARGET_MEMORY, 3, records.SOURCE_BASE_MEM, CHUNK_SIZE * 2)
    builder.add_copy(TARGET_DISK, 4, records.SOURCE_BASE_DISK, CHUNK_SIZE * 3)
    builder.add_self(TARGET_DISK, 5, at)
    builder.add_copy(TARGET_MEMORY, 6, records.SOURCE_OVERLAY_DISK, CHUNK_SIZE * 2 + 1024)
    out["records"] = {"golden-blob": blob_plain, "every-source": bytes(builder.data)}

    tiny_skeleton = Skeleton(array("Q", [10, 10, 40]), array("q", [-1, 8192, 4096 * 7]),
                             b"QEVM-skeleton-bytes-around-the-payloads-cut-out-of-it")
    out["skeleton"] = {"golden": skeleton_plain, "tiny": tiny_skeleton.encode()}

    out["blobcodec"] = {"%s" % blobcodec.NAMES[c]: (4096).to_bytes(3, "big")
                        + blobcodec.compress(b"records " * 300 + page[:100], c)
                        for c in blobcodec.NAMES}
    out["blobcodec"]["empty-zstd"] = bytes(3) + blobcodec.compress(b"", blobcodec.ZSTD)

    disk = bytes(CHUNK_SIZE) + page
    image = save_image(one)
    manifest = {"format": "openstackpp-base-package", "version": 1,
                "id": hashlib.sha256(disk).hexdigest(), "name": "seed",
                "disk_size": len(disk), "memory_size": len(image),
                "memory_sha256": hashlib.sha256(image).hexdigest()}
    members = [("manifest.json", json.dumps(manifest).encode()), ("disk.raw", disk),
               ("memory.img", image)]
    out["base_package"] = {"deflated.zip": _zip(members, zipfile.ZIP_DEFLATED, zip64=True),
                           "stored.zip": _zip(members)}

    out["saveimage"] = {"one-block": save_image(one), "two-blocks-no-cookie": save_image(two, "")}
    out["migstream"] = {"one-block": one, "two-blocks-resent": two}

    sealed = _handoff_plaintexts(page)
    out["handoff_frames"] = {"valid-sealed": b"\x01" + sealed,
                             "valid-raw": b"\x00" + targets._seal(sealed)}

    nonce = bytes(range(32))
    uuid = targets.DEST_UUID.encode()
    out["handoff_handshake"] = {
        "to-source": b"\x00" + uuid + nonce + wire._mac(targets.FAKE_SECRET, b"dest", nonce,
                                                        nonce, uuid),
        "to-destination": b"\x01" + wire.MAGIC + nonce + bytes(wire.MAC_SIZE),
        "ticket": b"\x02tcp://127.0.0.1:40000/%s#%s" % (uuid, targets.FAKE_SECRET.hex().encode()),
        "ticket-ipv6": b"\x02tcp://[::1]:5/%s#%s" % (uuid, bytes(32).hex().encode()),
    }
    return out


def _handoff_plaintexts(page):
    """A complete, valid handoff stream for the synthetic base, as ``targets._seal`` reads
    it: HEADER, RECORDS (disk), SETUP, RECORDS (memory), TAIL, END with right digests."""
    w = targets.world()
    base = w.base
    stream = tiny_stream([(b"pc.ram", 256)], {})
    _blocks, _sid, setup_end = migstream.parse_setup(stream)
    layout = migstream.parse(stream, 0)
    setup, tail = stream[:setup_end], stream[layout.ram_end:]
    _, _, offsets, _ = base.memory_pages()
    disk = records.BlobBuilder()
    at = disk.add_raw(TARGET_DISK, 1, page)
    disk.add_zero(TARGET_DISK, 2)
    disk.add_copy(TARGET_DISK, 5, records.SOURCE_BASE_DISK, CHUNK_SIZE * 3)
    disk.add_self(TARGET_DISK, 6, at)
    memory = records.BlobBuilder()
    memory.add_raw(TARGET_MEMORY, 0, page[::-1])
    memory.add_zero(TARGET_MEMORY, CHUNK_SIZE)
    memory.add_copy(TARGET_MEMORY, 2 * CHUNK_SIZE, records.SOURCE_BASE_MEM, offsets[0])
    memory.add_prior(TARGET_MEMORY, 3 * CHUNK_SIZE, TARGET_DISK, 1)
    state = destination._Reassembly(base, w.base_mem, w.base_disk)
    state.take_records(bytes(disk.data), 1)
    state.take_setup(setup)
    state.take_records(bytes(memory.data), 3)
    digests = bytearray(base.disk_digests())
    for index, chunk in state.disk.items():
        digests[32 * index:32 * index + 32] = hashlib.sha256(chunk).digest()
    frames = [
        (wire.HEADER, msgpack.packb({"version": protocol.PROTOCOL_VERSION,
                                     "base_vm_sha256": base.id,
                                     "base_memory_sha256": base.memory_sha256,
                                     "disk_size": base.disk_size, "xml": XML})),
        (wire.RECORDS, blobcodec.compress(bytes(disk.data))),
        (wire.SETUP, blobcodec.compress(setup)),
        (wire.RECORDS, blobcodec.compress(bytes(memory.data))),
        (wire.TAIL, blobcodec.compress(tail, blobcodec.NONE)),
        (wire.END, msgpack.packb({
            "memory_digest": protocol.memory_digest(setup, state.digests, tail),
            "disk_content_sha256": content_sha256(bytes(digests)), "pages": 4})),
    ]
    return b"".join(struct.pack(">BH", kind, len(p)) + p for kind, p in frames)


def main():
    for target, files in seeds().items():
        assert target in targets.TARGETS, target
        folder = os.path.join(CORPUS, target)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for name, data in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
            print("%-18s %-22s %7d bytes  %s" % (target, name, len(data),
                                               targets.run(target, data)))


if __name__ == "__main__":
    main()
