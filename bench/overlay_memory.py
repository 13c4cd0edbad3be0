"""Peak memory of overlay creation (issue 13, "bounded memory"): delta -> dedup -> pack.

No libvirt, no VM: for each RAM size (default 256 MiB and 1 GiB) a synthetic base and a
customized VM differing from it by a fixed 48 MiB (40 MiB of memory, 8 MiB of disk; see
``bench/bigvm.py``) are written, then the write path after capture runs in a
child process, first with the engine of ``--old-rev`` (extracted with ``git archive``),
then with this tree's. Each child reports its peak RSS (``VmHWM``), wall and CPU time and
the SHA-256 of the overlay it wrote (of its members but the meta: format versions differ
there): both must write the same overlay. The capture's
rewrite of the memory image's stream (each page once, ``canonical.rewrite`` against
``migstream.canonical`` over a map of the file) is measured the same way.

``python -m bench.overlay_memory`` (from the repository's root; ~1 min, 2.2 GiB of scratch
disk under ``.state/bench``). JSON on stdout (also ``.state/bench/overlay_memory.json``),
a table on stderr. Exits non-zero if the two overlays differ.
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench import bigvm, log, publish, state_dir

OLD_REV = "11e2b9b"       # the last commit with the in-memory write path
DELTA_MEMORY, DELTA_DISK, DISK_SIZE = 40 << 20, 8 << 20, 64 << 20


STAGES = ("write", "rewrite")


def _table(doc):
    rows = ["%-9s %-28s %-4s %12s %8s %8s  %s" % ("RAM", "stage", "path", "peak RSS", "wall s",
                                                  "cpu s", "same output")]
    names = {"write": "delta -> dedup -> pack", "rewrite": "capture's canonical rewrite"}
    for size in doc["sizes"]:
        for stage in STAGES:
            result = size[stage]
            for path in ("old", "new"):
                r = result[path]
                rows.append("%-9s %-28s %-4s %8.0f MiB %8.2f %8.2f  %s" % (
                    "%d MiB" % (size["ram_bytes"] >> 20), names[stage], path,
                    r["peak_rss_bytes"] / 2 ** 20, r["wall_s"], r["cpu_s"], result["identical"]))
            rows.append("%-9s %-28s new/old: peak RSS %.3f, wall %.2f" % (
                "", "", result["rss_new_over_old"], result["wall_new_over_old"]))
    return "\n".join(rows)


def measure(root, mib, old_tree):
    """Both paths of both stages on the VM pair of ``mib`` MiB of RAM."""
    work = os.path.join(root, "ram-%d" % mib)
    os.mkdir(work)
    log("writing the synthetic base and customized VM of %d MiB RAM", mib)
    pair = bigvm.make_pair(work, mib << 20, DELTA_MEMORY, DELTA_DISK, DISK_SIZE)
    size = {"ram_bytes": mib << 20, "image_bytes": os.path.getsize(pair["image"])}
    for stage in STAGES:
        result = size[stage] = {}
        for path, tree in (("old", old_tree), ("new", bigvm.REPO_DIR)):
            log("%d MiB: %s, %s path", mib, stage, path)
            out = os.path.join(work, "%s-%s.out" % (stage, path))
            result[path] = bigvm.run_child(pair, out, tree, old=path == "old", stage=stage)
            os.unlink(out)
        old, new = result["old"], result["new"]
        # the skeleton and blobs; the meta says which format version wrote them
        result["identical"] = (old.get("members_sha256", old["output_sha256"]) ==
                               new.get("members_sha256", new["output_sha256"]))
        result["rss_new_over_old"] = round(new["peak_rss_bytes"] / old["peak_rss_bytes"], 3)
        result["wall_new_over_old"] = round(new["wall_s"] / max(old["wall_s"], 0.01), 3)
    shutil.rmtree(work)
    return size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,1024", help="RAM sizes in MiB, comma-separated")
    parser.add_argument("--old-rev", default=OLD_REV, help="the engine to compare with")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    root = tempfile.mkdtemp(prefix="membench-", dir=state_dir())
    try:
        old_tree = os.path.join(root, "old")
        os.mkdir(old_tree)
        archive = subprocess.run(["git", "-C", bigvm.REPO_DIR, "archive", args.old_rev,
                                  "cloudlet_compute"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old_tree], input=archive, check=True)
        doc = {"bench": "overlay_memory", "old_rev": args.old_rev,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "delta_memory_bytes": DELTA_MEMORY, "delta_disk_bytes": DELTA_DISK,
               "disk_bytes": DISK_SIZE, "cpus": os.cpu_count(),
               "sizes": [measure(root, int(mib), old_tree) for mib in args.sizes.split(",")]}
        doc["bench_wall_s"] = round(time.monotonic() - t0, 1)
        publish("overlay_memory.json", doc, _table(doc))
        return 0 if all(s[stage]["identical"] for s in doc["sizes"] for stage in STAGES) else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
