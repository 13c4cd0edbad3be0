"""Dedup of memory pages against the disk at 512-byte offsets (issue 13 item 6): overlay size,
write time and peak RSS with the customized disk's unaligned windows and with 4 KiB-aligned
chunks only, in the same run.

No libvirt: synthetic base and customized VMs (``bench/synthetic.py`` streams, the base
disk of ``bench/bigvm.py``). Cases:

- ``issue``: the issue's case. A file of random bytes written to the disk at a 1 KiB offset
  (a 1 KiB-block ext4), also in memory twice (page cache and tmpfs), plus other random
  pages: 16 MiB unique.
- ``aligned``: the same at a 4 KiB-aligned offset (4 KiB matching suffices; the cost of
  the windows where they find nothing new).
- ``disk-heavy``: a large disk delta and nothing of it in memory: what the windows cost.

The write path after capture (delta -> dedup -> pack, ``bench/bigvm.py``'s child) runs in a
child process per mode and reports its wall time, dedup time and peak RSS (``VmHWM``).

``python -m bench.dedup_alignment`` (from the repository's root; ~1 min, ~1.5 GiB of scratch
disk under ``.state/bench``). JSON on stdout (also ``.state/bench/dedup_alignment.json``),
a table on stderr.
"""

import argparse
import datetime
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from bench import bigvm, log, publish, state_dir

PAGE, MiB = 4096, 1 << 20
CASES = {   # name: (RAM, disk, file bytes, file offset on disk, copies in memory, other)
    "issue": (256 * MiB, 64 * MiB, 8 * MiB, 16 * MiB + 1024, 2, 8 * MiB),
    "aligned": (256 * MiB, 64 * MiB, 8 * MiB, 16 * MiB, 2, 8 * MiB),
    "disk-heavy": (256 * MiB, 512 * MiB, 256 * MiB, 64 * MiB + 1024, 0, 8 * MiB),
}


def make_case(root, ram_size, disk_size, file_size, file_at, copies, other, seed=17):
    """Write a base VM and a customized one (``bigvm.run_child``'s pair) for one case."""
    from cloudlet_compute import bases
    from cloudlet_compute.format.saveimage import SaveHeader
    from bench import synthetic

    rnd, zero = random.Random(seed), bytes(PAGE)
    data = rnd.randbytes(file_size)

    def base_page(addr):
        if (addr // PAGE) % bigvm.ZERO_EVERY == 0:
            return zero
        return random.Random(seed * 1000003 + addr).randbytes(PAGE)

    changed, at = {}, PAGE * 16
    for _ in range(copies):                    # page cache, tmpfs: the file page by page
        for pos in range(0, file_size, PAGE):
            changed[at] = data[pos:pos + PAGE]
            at += PAGE
    for _ in range(other // PAGE):
        changed[at] = rnd.randbytes(PAGE)
        at += PAGE
    header = SaveHeader(synthetic.XML, "<cookie/>").encode()
    images = {}
    for name, page_at in (("base", base_page),
                          ("custom", lambda a: changed.get(a) or base_page(a))):
        images[name] = os.path.join(root, name + ".img")
        with open(images[name], "wb") as f:
            f.write(header)
            for piece in synthetic.stream_pieces(ram_size, page_at):
                f.write(piece)
    disk = os.path.join(root, "disk.raw")
    with open(disk, "wb") as f:
        for i in range(disk_size // PAGE):
            f.write(rnd.randbytes(PAGE) if i % 3 == 0 else zero)
    store = bases.BaseStore(os.path.join(root, "home"))
    base = store.add(disk, images["base"], "align-%d" % seed)
    top = os.path.join(root, "custom.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    base.disk_path, top], check=True)
    path = os.path.join(root, "file")
    with open(path, "wb") as f:
        f.write(data)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -s %s %d %d"
                    % (path, file_at, file_size), top], check=True, capture_output=True)
    os.unlink(path)
    return {"home": store.home, "base_id": base.id, "image": images["custom"], "top": top}


def measure(root, name):
    ram, disk, file_size, file_at, copies, other = CASES[name]
    work = os.path.join(root, name)
    os.mkdir(work)
    log("%s: writing the base and customized VMs", name)
    pair = make_case(work, ram, disk, file_size, file_at, copies, other)
    case = {"case": name, "ram_bytes": ram, "disk_bytes": disk, "file_bytes": file_size,
            "file_offset": file_at, "file_copies_in_memory": copies, "other_bytes": other}
    for mode, unaligned in (("512", True), ("4k", False)):
        log("%s: write path, %s matching", name, mode)
        out = os.path.join(work, "%s.zip" % mode)
        case[mode] = bigvm.run_child(pair, out, unaligned=unaligned)
        os.unlink(out)
    case["size_512_over_4k"] = round(case["512"]["output_bytes"] / case["4k"]["output_bytes"], 3)
    shutil.rmtree(work)
    return case


def _table(doc):
    rows = ["%-11s %-5s %10s %8s %8s %10s  %s" % ("case", "match", "overlay", "write s",
                                                   "dedup s", "peak RSS", "sources")]
    for case in doc["cases"]:
        for mode in ("512", "4k"):
            r = case[mode]
            rows.append("%-11s %-5s %6.1f MiB %8.2f %8.2f %6.0f MiB  %s" % (
                case["case"], mode, r["output_bytes"] / MiB, r["wall_s"], r["dedup_s"],
                r["peak_rss_bytes"] / MiB,
                " ".join("%s=%d" % kv for kv in sorted(r["sources"].items()) if kv[1])))
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: %s"
                        % ", ".join(CASES))
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    root = tempfile.mkdtemp(prefix="alignbench-", dir=state_dir())
    try:
        doc = {"bench": "dedup_alignment", "cpus": os.cpu_count(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "cases": [measure(root, name) for name in args.cases.split(",")]}
        doc["bench_wall_s"] = round(time.monotonic() - t0, 1)
        publish("dedup_alignment.json", doc, _table(doc))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
