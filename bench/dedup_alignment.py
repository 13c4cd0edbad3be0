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

``--real`` adds the issue's case on a real VM (libvirt): the tiny guest booted from a copy of
its disk made again with 1 KiB blocks (``mkfs.ext4 -b 1024``), ``cloudlet base create``,
``resume``, then an 8 MiB random file written to the disk and copied to tmpfs, and 8 MiB of
other random data in tmpfs; ``cloudlet overlay create`` (512-byte matching), then
``overlay.create`` of the same running VM with 4 KiB matching only, and a synthesis whose
guest must read back the same file, copy and data.

``python -m bench.dedup_alignment [--real]`` (from the repository's root; ~1.5 min, ~1.5 GiB
of scratch disk under ``.state/bench``; ``--real`` ~1 min more). JSON on stdout (also
``.state/bench/dedup_alignment.json``), a table on stderr.
"""

import argparse
import datetime
import functools
import os
import random
import shutil
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
    rnd = random.Random(seed)
    data = b"".join(rnd.randbytes(MiB) for _ in range(file_size // MiB))
    changed, at = {}, PAGE * 16
    for _ in range(copies):                    # page cache, tmpfs: the file page by page
        for pos in range(0, file_size, PAGE):
            changed[at] = data[pos:pos + PAGE]
            at += PAGE
    for _ in range(other // PAGE):
        changed[at] = rnd.randbytes(PAGE)
        at += PAGE
    return bigvm.write_pair(root, "align-%d" % seed, ram_size,
                            functools.partial(bigvm.seeded_page, seed), changed, rnd,
                            disk_size, lambda: data, file_at)


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


REAL_CUSTOMIZE = ("head -c 8388608 /dev/urandom > /mnt/file8m; cp /mnt/file8m /run/copy; "
                  "head -c 8388608 /dev/urandom > /run/rand; sync")
REAL_OBSERVE = "md5sum /mnt/file8m /run/copy /run/rand | cut -d' ' -f1 | tr '\\n' ' '"


def measure_real(root):
    """The issue's case on the tiny guest with a 1 KiB-block ext4 disk (libvirt)."""
    import libvirt
    from cloudlet_compute import bases
    from cloudlet_compute.write import overlay
    from stack import story as storymod
    from stack.guest import guest

    os.chmod(root, 0o755)                      # mkdtemp made it 0700: QEMU must reach in
    image = guest.tiny_with_blocks(os.path.join(root, "guest-1k"), 1024)
    conn = libvirt.open("qemu:///system")
    story = storymod.Story(conn, os.path.join(root, "real"), image=image)
    try:
        log("real: boot, base create, resume")
        base_id = story.create_base(story.boot_source())
        customized = story.resume(base_id)
        with story.channel(customized) as chan:
            chan.run(REAL_CUSTOMIZE, timeout=120)
            expected = chan.run(REAL_OBSERVE).split()
        log("real: overlay create (512-byte matching)")
        out = os.path.join(story.root, "overlay.zip")
        t = time.monotonic()
        created = story.create_overlay(customized, out)
        case = {"case": "real-1k-ext4", "512": {
            "output_bytes": os.path.getsize(out), "wall_s": round(time.monotonic() - t, 2),
            "dedup_s": round(created["timings"]["dedup"], 2), "sources": created["sources"]}}
        log("real: overlay create (4 KiB matching only)")
        out4k = os.path.join(story.root, "overlay-4k.zip")
        t = time.monotonic()
        meta, timings = overlay.create(conn, bases.BaseStore(story.home), customized, out4k,
                                       unaligned=False)
        case["4k"] = {"output_bytes": os.path.getsize(out4k),
                      "wall_s": round(time.monotonic() - t, 2),
                      "dedup_s": round(timings["dedup"], 2), "sources": meta["sources"]}
        log("real: synthesis")
        synthesized, _ = story.synthesize(out)
        with story.channel(synthesized) as chan:
            case["synthesized_same_files"] = chan.run(REAL_OBSERVE).split() == expected
        case["size_512_over_4k"] = round(case["512"]["output_bytes"] /
                                         case["4k"]["output_bytes"], 3)
        return case
    finally:
        story.cleanup()
        conn.close()


def _table(doc):
    rows = ["%-12s %-5s %10s %8s %8s %10s  %s" % ("case", "match", "overlay", "write s",
                                                   "dedup s", "peak RSS", "sources")]
    for case in doc["cases"]:
        for mode in ("512", "4k"):
            r = case[mode]
            rss = "%6.0f MiB" % (r["peak_rss_bytes"] / MiB) if "peak_rss_bytes" in r else "-"
            rows.append("%-12s %-5s %6.1f MiB %8.2f %8.2f %10s  %s" % (
                case["case"], mode, r["output_bytes"] / MiB, r["wall_s"], r["dedup_s"], rss,
                " ".join("%s=%d" % kv for kv in sorted(r["sources"].items()) if kv[1])))
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: %s"
                        % ", ".join(CASES))
    parser.add_argument("--real", action="store_true", help="add the case on a real VM")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    root = tempfile.mkdtemp(prefix="alignbench-", dir=state_dir())
    try:
        doc = {"bench": "dedup_alignment", "cpus": os.cpu_count(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "cases": [measure(root, name) for name in args.cases.split(",") if name]}
        if args.real:
            doc["cases"].append(measure_real(root))
        doc["bench_wall_s"] = round(time.monotonic() - t0, 1)
        publish("dedup_alignment.json", doc, _table(doc))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
