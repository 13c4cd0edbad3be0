"""Synthetic base and customized VMs of any RAM size, on disk, and the overlay write path
after capture (delta -> dedup -> pack) run in a child process that reports its peak RSS.

The customized VM differs from its base by ``delta_memory`` bytes of pages (new random
pages, copies of other base pages, pages that became zeros, repeats of new pages) and
``delta_disk`` bytes of disk (new data, then repeats of new memory pages), whatever the
RAM size; one base page in 64 is zeros. Everything is deterministic for a seed. For
``bench/overlay_memory.py`` and ``tests/compute/test_bounded_memory.py``.

``python -m bench.bigvm HOME BASE_ID IMAGE TOP OUT [--old] [--stage rewrite]`` is
the child: it runs the write path (or capture's canonical rewrite of the image's stream) of
whatever ``cloudlet_compute`` comes first on ``sys.path`` (``--old``: the in-memory API of
before) and prints one JSON line.
"""

import argparse
import functools
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

PAGE = 4096
ZERO_EVERY = 64
REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seeded_page(seed, addr):
    """The base page at ``addr`` of the base VMs of ``seed``: zeros one in ``ZERO_EVERY``,
    else random."""
    if (addr // PAGE) % ZERO_EVERY == 0:
        return bytes(PAGE)
    return random.Random(seed * 1000003 + addr).randbytes(PAGE)


def make_pair(root, ram_size, delta_memory=40 << 20, delta_disk=8 << 20, disk_size=64 << 20,
              seed=13):
    """Write a base VM (registered in a store under ``root``) and a customized memory image
    and qcow2; return ``{"home", "base_id", "image", "top"}``."""
    rnd, pages, zero = random.Random(seed), ram_size // PAGE, bytes(PAGE)
    base_page = functools.partial(seeded_page, seed)

    changed, literals = {}, []
    for n, page in enumerate(sorted(rnd.sample(range(1, pages), delta_memory // PAGE))):
        kind = n % 32
        if kind == 0:
            changed[page * PAGE] = zero
        elif kind == 1:
            changed[page * PAGE] = base_page((page + 7) % pages * PAGE)
        elif kind == 2 and literals:
            changed[page * PAGE] = literals[-1]
        else:
            changed[page * PAGE] = rnd.randbytes(PAGE)
            literals.append(changed[page * PAGE])

    def disk_delta():
        new = delta_disk * 3 // 4 // PAGE * PAGE
        return rnd.randbytes(new) + b"".join(literals[i % len(literals)]
                                             for i in range((delta_disk - new) // PAGE))
    return write_pair(root, "bigvm-%d" % ram_size, ram_size, base_page, changed, rnd,
                      disk_size, disk_delta, disk_size // 8)


def write_pair(root, name, ram_size, base_page, changed, rnd, disk_size, disk_delta, disk_at):
    """Write a base VM (page ``base_page(address)``; a disk of ``disk_size`` bytes, every
    third chunk random, zeros between) registered as ``name`` in a store under ``root``, and
    a customized VM (the pages ``changed`` ({address: bytes}) over the base's; the bytes
    ``disk_delta()`` returns at byte ``disk_at`` of a qcow2 over the base disk); return
    ``{"home", "base_id", "image", "top"}``."""
    from cloudlet_compute import bases
    from cloudlet_compute.format.saveimage import SaveHeader
    from bench import synthetic

    header = SaveHeader(synthetic.XML, "<cookie/>").encode()
    images = {}
    custom_page = lambda a: changed.get(a) or base_page(a)   # noqa: E731
    for role, page_at in (("base", base_page), ("custom", custom_page)):
        images[role] = os.path.join(root, role + ".img")
        with open(images[role], "wb") as f:
            f.write(header)
            for piece in synthetic.stream_pieces(ram_size, page_at):
                f.write(piece)
    disk, zero = os.path.join(root, "disk.raw"), bytes(PAGE)
    with open(disk, "wb") as f:
        for i in range(disk_size // PAGE):
            f.write(rnd.randbytes(PAGE) if i % 3 == 0 else zero)
    store = bases.BaseStore(os.path.join(root, "home"))
    base = store.add(disk, images["base"], name)
    top = os.path.join(root, "custom.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    base.disk_path, top], check=True)
    data = os.path.join(root, "disk-delta")
    with open(data, "wb") as f:
        length = f.write(disk_delta())
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -s %s %d %d"
                    % (data, disk_at, length), top], check=True, capture_output=True)
    os.unlink(data)
    return {"home": store.home, "base_id": base.id, "image": images["custom"], "top": top}


def write_path(home, base_id, image, top, out, old=False, unaligned=True):
    """Run delta -> dedup -> pack into ``out``; return the figures of this process
    (``unaligned``: as for ``dedup.dedup``)."""
    from cloudlet_compute import bases
    from cloudlet_compute.format.blobcodec import ZSTD
    from cloudlet_compute.progress import NullProgress
    from cloudlet_compute.write import dedup, delta, overlay, pack

    t0, cpu0 = time.monotonic(), time.process_time()
    base = bases.BaseStore(home).get(base_id)
    work = tempfile.mkdtemp(dir=os.path.dirname(out))
    extra = () if old else (work,)
    mem = delta.memory_delta(image, base, *extra)
    disk = delta.disk_delta(top, base, *extra)
    t1 = time.monotonic()
    chunks = dedup.dedup(mem.changed, disk.changed, base, *(() if old else (unaligned,)))
    dedup_s = time.monotonic() - t1
    fields = dict(overlay.meta_fields(base, mem, disk), created_by="bigvm")
    meta = pack.write_package(out, chunks, mem.skeleton, fields, ZSTD, 3, NullProgress())
    shutil.rmtree(work)
    figures = dict(_figures(out, t0, cpu0), dedup_s=round(dedup_s, 2), sources=meta["sources"])
    with zipfile.ZipFile(out) as package:   # what two format versions can have in common
        figures["members_sha256"] = hashlib.sha256(b"".join(
            package.read(n) for n in package.namelist() if n != "overlay-meta")).hexdigest()
    return figures


def rewrite_path(image, out, old=False):
    """Rewrite the stream of the memory image ``image`` canonically into ``out``, as capture
    does (``--old``: ``migstream.canonical`` over a map of the whole file)."""
    from cloudlet_compute.format import saveimage

    t0, cpu0 = time.monotonic(), time.process_time()
    with open(image, "rb") as f:
        start = saveimage.SaveHeader.parse(f.read(1 << 20)).stream_offset
    with open(out, "wb") as dest:
        if old:
            import mmap
            from cloudlet_compute.format import migstream
            with open(image, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as buf:
                dest.write(migstream.canonical(buf, start, migstream.parse(buf, start)))
        else:
            from cloudlet_compute.write import canonical
            canonical.rewrite(image, dest, start)
    return _figures(out, t0, cpu0)


def _figures(out, t0, cpu0):
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    with open("/proc/self/status") as f:   # not ru_maxrss: it keeps the forking parent's peak
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(out, "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    import cloudlet_compute
    return {"engine": os.path.dirname(cloudlet_compute.__file__), "peak_rss_bytes": peak * 1024,
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "output_bytes": os.path.getsize(out), "output_sha256": sha}


def run_child(pair, out, engine_dir=REPO_DIR, old=False, stage="write", unaligned=True):
    """``write_path`` (or ``rewrite_path``, ``stage="rewrite"``) in a new process importing
    ``cloudlet_compute`` from ``engine_dir``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([engine_dir, REPO_DIR]))
    cmd = [sys.executable, "-m", "bench.bigvm", pair["home"], pair["base_id"],
           pair["image"], pair["top"], out, "--stage", stage] + (["--old"] if old else []) + \
        ([] if unaligned else ["--aligned-only"])
    done = subprocess.run(cmd, env=env, cwd=engine_dir, check=True, capture_output=True,
                          text=True)
    return json.loads(done.stdout.splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("home", "base_id", "image", "top", "out"):
        parser.add_argument(name)
    parser.add_argument("--old", action="store_true")
    parser.add_argument("--stage", choices=("write", "rewrite"), default="write")
    parser.add_argument("--aligned-only", action="store_true",
                        help="dedup against 4 KiB-aligned disk chunks only")
    args = parser.parse_args(argv)
    if args.stage == "rewrite":
        figures = rewrite_path(args.image, args.out, args.old)
    else:
        figures = write_path(args.home, args.base_id, args.image, args.top, args.out, args.old,
                             not args.aligned_only)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
