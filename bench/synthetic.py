"""Synthetic base VMs and overlays, made without libvirt, for format tests, fuzzing and
``bench/bigvm.py``.

The memory images follow the real layout (libvirt header + QEMU stream version 3 with a RAM
section, opaque device state, EOF and vmdesc), small and deterministic.
"""

import json
import os
import random
import struct
import subprocess

from cloudlet_compute import bases
from cloudlet_compute.format.blobcodec import ZSTD
from cloudlet_compute.format.saveimage import SaveHeader
from cloudlet_compute.progress import NullProgress
from cloudlet_compute.write import dedup, delta, overlay, pack

PAGE = 4096
RAM_SIZE = 256 * PAGE
DISK_SIZE = 256 * PAGE
XML = "<domain type='qemu'><name>synthetic</name><devices/></domain>"


def _be32(v):
    return struct.pack(">I", v)


def _be64(v):
    return struct.pack(">Q", v)


def stream_pieces(ram_size, page_at, device_state=b"\x04device-state", piece=4 << 20):
    """Yield, in pieces of about ``piece`` bytes, the QEMU stream of one RAM block ``pc.ram``
    of ``ram_size`` bytes whose page at address ``a`` is ``page_at(a)`` (zeros: a zero
    page record), sent in two sections, then ``device_state``, EOF and the vmdesc."""
    out = bytearray(b"QEVM" + _be32(3) + b"\x07" + _be32(2) + b"pc")
    out += b"\x01" + _be32(2) + b"\x03ram" + _be32(0) + _be32(4)
    out += _be64(ram_size | 0x04) + b"\x06pc.ram" + _be64(ram_size) + _be64(0x10)
    out += b"\x7e" + _be32(2)
    zero = bytes(PAGE)
    for part, (lo, hi) in enumerate(((0, ram_size // 2), (ram_size // 2, ram_size))):
        out += (b"\x02" if part == 0 else b"\x03") + _be32(2)
        for addr in range(lo, hi, PAGE):
            page = page_at(addr)
            name = b"" if addr else b"\x06pc.ram"
            cont = 0x20 if addr else 0
            if page == zero:
                out += _be64(addr | 0x02 | cont) + name + b"\x00"
            else:
                out += _be64(addr | 0x08 | cont) + name + page
            if len(out) >= piece:
                yield bytes(out)
                out = bytearray()
        out += _be64(0x10) + b"\x7e" + _be32(2)
    vmdesc = json.dumps({"page_size": PAGE, "devices": []}).encode()
    out += device_state + b"\x00\x06" + _be32(len(vmdesc)) + vmdesc
    yield bytes(out)


def memory_image(pages, device_state=b"\x04device-state"):
    """A save image whose RAM block ``pc.ram`` holds ``pages`` ({ram offset: bytes})."""
    zero = bytes(PAGE)
    return SaveHeader(XML, "<cookie/>").encode() + b"".join(
        stream_pieces(RAM_SIZE, lambda addr: pages.get(addr, zero), device_state))


def world(seed=7, version=2):
    """Deterministic base and customized contents: ``(base_pages, base_disk, custom_pages,
    custom_disk_chunks)`` — the customization has every kind of chunk a record of format
    ``version`` can be (the golden file of each version is written from its world)."""
    rnd = random.Random(seed)
    noise = lambda: bytes(rnd.getrandbits(8) for _ in range(PAGE))  # noqa: E731
    base_pages = {a: noise() for a in range(0, RAM_SIZE, PAGE) if rnd.random() < 0.5}
    base_disk = bytearray(DISK_SIZE)
    for i in range(0, DISK_SIZE // PAGE, 3):
        base_disk[i * PAGE:(i + 1) * PAGE] = noise()
    custom = dict(base_pages)
    addrs = sorted(base_pages)
    literal = noise()
    custom[addrs[0]] = noise()                                   # raw
    custom[addrs[1]] = literal                                   # raw, repeated below
    custom[addrs[2]] = literal                                   # self (memory)
    custom[addrs[3]] = bytes(PAGE)                               # a page that became zeros
    custom[addrs[4]] = base_pages[addrs[9]]                      # base memory
    custom[addrs[5]] = bytes(base_disk[3 * PAGE:4 * PAGE])       # base disk
    custom_disk = {1: literal, 2: noise(), 3: bytes(PAGE),       # self, raw, zero
                   4: base_pages[addrs[10]]}                     # base memory
    if version >= 2:                                             # the customized disk at 1 KiB
        custom[addrs[6]] = custom_disk[1][1024:] + custom_disk[2][:1024]
    return base_pages, bytes(base_disk), custom, custom_disk


def make_base(store, workdir, seed=7):
    """Register the synthetic base of ``world(seed)`` in ``store``; return the BaseVM."""
    base_pages, base_disk, _, _ = world(seed)
    disk, memory = os.path.join(workdir, "disk.raw"), os.path.join(workdir, "memory.img")
    with open(disk, "wb") as f:
        f.write(base_disk)
    with open(memory, "wb") as f:
        f.write(memory_image(base_pages))
    return store.add(disk, memory, "synthetic-%d" % seed)


def make_overlay(base, workdir, out_path, seed=7, codec=ZSTD, level=3, custom=None,
                 unaligned=True):
    """Write the overlay of the customized VM of ``world(seed)`` (or ``custom``: its
    ``(pages, disk chunks)``) against ``base``; return ``(meta, customized memory image bytes,
    customized disk chunks)``. ``unaligned``: as for ``dedup.dedup``."""
    custom_pages, custom_disk = custom or world(seed)[2:]
    image = memory_image(custom_pages)
    image_path = os.path.join(workdir, "custom.img")
    with open(image_path, "wb") as f:
        f.write(image)
    top = os.path.join(workdir, "custom.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    base.disk_path, top], check=True)
    data = os.path.join(workdir, "chunk")
    for index, chunk in custom_disk.items():
        with open(data, "wb") as f:
            f.write(chunk)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -s %s %d %d"
                        % (data, index * PAGE, PAGE), top], check=True, capture_output=True)
    mem = delta.memory_delta(image_path, base, workdir)
    disk = delta.disk_delta(top, base, workdir)
    chunks = dedup.dedup(mem.changed, disk.changed, base, unaligned)
    fields = dict(overlay.meta_fields(base, mem, disk), created_by="tests")
    meta = pack.write_package(out_path, chunks, mem.skeleton, fields, codec, level,
                              NullProgress())
    return meta, image, custom_disk


def store_at(path):
    """A BaseStore rooted at ``path`` (created)."""
    return bases.BaseStore(path)
