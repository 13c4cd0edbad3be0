"""Codec comparison on ONE overlay content: size, pack time, decompress time, link model.

The overlay content is reproduced with the engine's own stages on one capture of the
customized domain (``capture`` -> ``delta`` -> ``dedup`` -> ``pack.build_blobs``), so
every codec and level compresses exactly the same plaintexts: the memory skeleton and
the blobs. For each configuration:

* ``bytes``: the overlay package size = compressed members + the zip/meta overhead
  (measured once by writing the real package with codec ``none``);
* ``pack_s``: wall time to compress all members on a thread pool of the size
  ``pack.write_package`` uses (min(4, cpus)); ``pack_cpu_s``: CPU seconds of that;
* ``decompress_s``: one thread, members in order, as ``synthesis._produce`` does; the
  least thread CPU time of 3 repetitions, so that other load on the host does not count
  (on an idle core it is the wall time; ``decompress_wall_s`` is the least wall time).

Wall times move with the host's load; the recommendation uses CPU times only.

Synthesis over a link of B bit/s is modelled as transfer = bytes * 8 / B plus the
decompression: ``serial`` = transfer + decompress (what the engine pays today: fetch and
decompression run in the same producer thread) and ``pipelined`` = max(transfer,
decompress) (the bound if they overlapped). Apply, disk write and restore are the same
for every codec and left out.

Run alone: ``.venv/bin/python -m bench.codec_choice`` boots the guest, customizes it like
``make bench`` and compares the codecs on one capture (``--json`` for JSON only).
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time
import uuid

from bench import human, log, save_json, state_dir
from cloudlet_compute.format import blobcodec
from cloudlet_compute.format.records import SOURCE_RAW, TARGET_MEMORY
from cloudlet_compute.progress import NullProgress
from cloudlet_compute.write import dedup, delta, overlay, pack

CONFIGS = [("none", 0), ("xz", 1), ("xz", 6), ("xz", 9),
           ("zstd", 1), ("zstd", 3), ("zstd", 9), ("zstd", 19), ("zstd", 22)]
LINKS = [("25 Mbit/s", 25e6), ("100 Mbit/s", 100e6), ("1 Gbit/s", 1e9)]
SIZE_SLACK = 0.01     # "equal-ish size": within 1 % of the smallest overlay
TIME_SLACK = 0.02     # modelled synthesis times within 2 % count as a tie
INCOMPRESSIBLE_PAGE = 4000
DECOMPRESS_REPEATS = 3   # decompression is timed 3 times; the least CPU time counts


def _workers():
    return max(1, min(4, os.cpu_count() or 1))


class Content:
    """The plaintexts of one overlay: ``plains[0]`` is the skeleton, then the blobs."""

    def __init__(self, plains, overhead, stats):
        self.plains, self.overhead, self.stats = plains, overhead, stats


def overlay_content(base, memory_path, disk_path, workdir):
    """Reproduce the overlay of a capture (memory image + disk top layer) against ``base``."""
    t0 = time.monotonic()
    mem = delta.memory_delta(memory_path, base, workdir)
    disk = delta.disk_delta(disk_path, base, workdir)
    chunks = dedup.dedup(mem.changed, disk.changed, base)
    plains = [mem.skeleton.encode()] + [plain for plain, _, _ in pack.build_blobs(chunks)]
    t1 = time.monotonic()
    # The package overhead (zip headers, directory, meta) is measured by writing the real
    # package with codec none; it differs between codecs by a few bytes of meta at most.
    fields = overlay.meta_fields(base, mem, disk)
    path = os.path.join(workdir, "codec-none.zip")
    pack.write_package(path, chunks, mem.skeleton, fields, blobcodec.NONE, 0, NullProgress())
    overhead = os.path.getsize(path) - sum(len(blobcodec.compress(p, blobcodec.NONE))
                                           for p in plains)
    os.unlink(path)
    sources = pack.source_counts(chunks)
    # How much of the literal payload no codec can shrink (a 4 KiB page zstd -1 cannot
    # bring under 4000 bytes is counted incompressible: the workload's random data).
    literals = [i for i in range(len(chunks)) if chunks.sources[i] == SOURCE_RAW]
    incompressible = sum(1 for i in literals
                         if len(blobcodec.compress(chunks.data(i), blobcodec.ZSTD, 1))
                         > INCOMPRESSIBLE_PAGE)
    stats = {"memory_changed": len(mem.changed), "disk_changed": len(disk.changed),
             "sources": sources, "literal_bytes": sources["raw"] * delta.CHUNK_SIZE,
             "literal_memory_pages": sum(1 for i in literals
                                         if chunks.target(i)[0] == TARGET_MEMORY),
             "literal_disk_pages": sum(1 for i in literals if chunks.target(i)[0] != TARGET_MEMORY),
             "incompressible_literal_bytes": incompressible * delta.CHUNK_SIZE,
             "skeleton_plain_bytes": len(plains[0]), "blobs": len(plains) - 1,
             "plain_bytes": sum(len(p) for p in plains), "package_overhead_bytes": overhead,
             "reproduce_s": round(t1 - t0, 3)}
    return Content(plains, overhead, stats)


def _compress_timed(plain, codec, level):
    t0 = time.thread_time()
    stored = blobcodec.compress(plain, codec, level)
    return stored, time.thread_time() - t0


def measure(content, codec_name, level):
    """Compress and decompress ``content`` with one configuration; return a result row."""
    codec = blobcodec.codec_id(codec_name)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(_workers()) as pool:
        results = list(pool.map(lambda p: _compress_timed(p, codec, level), content.plains))
    pack_s = time.monotonic() - t0
    stored = [s for s, _ in results]
    cpu, wall = [], []
    for rep in range(DECOMPRESS_REPEATS):
        w0, c0 = time.monotonic(), time.thread_time()
        plains = [blobcodec.decompress(s, len(plain)) for s, plain in zip(stored, content.plains)]
        cpu.append(time.thread_time() - c0)
        wall.append(time.monotonic() - w0)
        if plains != content.plains:
            raise AssertionError("%s level %d does not round-trip" % (codec_name, level))
    size = sum(len(s) for s in stored) + content.overhead
    return {"codec": codec_name, "level": level, "bytes": size,
            "ratio_to_plain": round(size / content.stats["plain_bytes"], 4),
            "skeleton_bytes": len(stored[0]),
            "pack_s": round(pack_s, 3), "pack_cpu_s": round(sum(c for _, c in results), 3),
            "decompress_s": round(min(cpu), 4), "decompress_wall_s": round(min(wall), 4)}


def model(row):
    """Add the modelled synthesis time (fetch + decompress) per link to ``row``."""
    row["links"] = {}
    for name, bps in LINKS:
        transfer = row["bytes"] * 8 / bps
        row["links"][name] = {"transfer_s": round(transfer, 3),
                              "serial_s": round(transfer + row["decompress_s"], 3),
                              "pipelined_s": round(max(transfer, row["decompress_s"]), 3)}
    return row


def recommend(rows):
    """Among configurations within SIZE_SLACK of the smallest overlay, the best modelled
    synthesis time (serial model, normalized per link and averaged over the links);
    ties (within TIME_SLACK) go to the least pack CPU time."""
    smallest = min(r["bytes"] for r in rows)
    candidates = [r for r in rows if r["bytes"] <= smallest * (1 + SIZE_SLACK)]
    best = {name: min(r["links"][name]["serial_s"] for r in candidates) for name, _ in LINKS}

    def score(r):
        return sum(r["links"][n]["serial_s"] / best[n] for n, _ in LINKS) / len(LINKS)

    top = min(score(r) for r in candidates)
    tied = [r for r in candidates if score(r) <= top * (1 + TIME_SLACK)]
    pick = min(tied, key=lambda r: r["pack_cpu_s"])   # CPU time: robust to host load
    per_link = {}
    for name, _ in LINKS:
        fastest = min(rows, key=lambda r: r["links"][name]["serial_s"])
        per_link[name] = "%s-%d" % (fastest["codec"], fastest["level"])
    default = (blobcodec.NAMES[blobcodec.DEFAULT_CODEC],
               blobcodec.DEFAULT_LEVELS[blobcodec.DEFAULT_CODEC])
    current = [r for r in rows if (r["codec"], r["level"]) == default]
    versus = None
    if current:
        cur = current[0]
        versus = {"default": "%s-%d" % default,
                  "size_change_pct": round(100.0 * (pick["bytes"] / cur["bytes"] - 1), 2),
                  "pack_s_change": round(pick["pack_s"] - cur["pack_s"], 2),
                  "synthesis_s_change": {n: round(pick["links"][n]["serial_s"]
                                                  - cur["links"][n]["serial_s"], 3)
                                         for n, _ in LINKS}}
    return {"codec": pick["codec"], "level": pick["level"], "versus_engine_default": versus,
            "rule": "smallest overlay within %d%%, then best modelled synthesis (serial: "
                    "transfer + decompress, averaged over the links), ties within %d%% to "
                    "the least pack CPU time" % (SIZE_SLACK * 100, TIME_SLACK * 100),
            "candidates": ["%s-%d" % (r["codec"], r["level"]) for r in candidates],
            "tied": ["%s-%d" % (r["codec"], r["level"]) for r in tied],
            "fastest_synthesis_per_link_any_size": per_link,
            "engine_default": {"codec": blobcodec.NAMES[blobcodec.DEFAULT_CODEC],
                               "level": blobcodec.DEFAULT_LEVELS[blobcodec.DEFAULT_CODEC]}}


def compare(content, configs=CONFIGS):
    """Measure every configuration on ``content``; return the result document."""
    rows = []
    for codec_name, level in configs:
        row = model(measure(content, codec_name, level))
        log("codec %-4s %2d: %s, pack %.2f s, decompress %.3f s", codec_name, level,
            human(row["bytes"]), row["pack_s"], row["decompress_s"])
        rows.append(row)
    return {"content": content.stats, "workers": _workers(),
            "model": {"links_bit_per_s": {n: b for n, b in LINKS},
                      "serial": "transfer + decompress (the engine today: one thread "
                                "fetches and decompresses)",
                      "pipelined": "max(transfer, decompress) (ideal overlap)",
                      "excluded": "apply, disk write, memory image, restore: the same for "
                                  "every codec"},
            "results": rows, "recommendation": recommend(rows)}


def table(doc):
    """The comparison as a human table."""
    links = [n for n, _ in LINKS]
    c = doc["content"]
    lines = ["codecs on one overlay: %s of plaintext (skeleton + %d blobs), %s literal chunks, "
             "%s of them incompressible" % (human(c["plain_bytes"]), c["blobs"],
                                            human(c["literal_bytes"]),
                                            human(c["incompressible_literal_bytes"]))]
    lines += ["%-9s %11s %8s %9s %9s  %s" % ("codec", "size", "pack s", "pack cpu", "dec cpu",
                                           "   ".join("%-17s" % ("synth@" + n) for n in links)),
             "%-9s %11s %8s %9s %9s  %s" % ("", "", "", "", "",
                                           "   ".join("%-17s" % "serial/pipelined"
                                                      for _ in links))]
    for r in doc["results"]:
        cells = ["%7.2f /%7.2f  " % (r["links"][n]["serial_s"], r["links"][n]["pipelined_s"])
                 for n in links]
        lines.append("%-9s %11s %8.2f %9.2f %9.3f  %s" % (
            "%s-%d" % (r["codec"], r["level"]), human(r["bytes"]), r["pack_s"], r["pack_cpu_s"],
            r["decompress_s"], "   ".join(cells)))
    rec = doc["recommendation"]
    lines.append("recommended: %s level %d (%s)" % (rec["codec"], rec["level"], rec["rule"]))
    vs = rec["versus_engine_default"]
    if vs:
        lines.append("  vs the engine default %s: size %+.2f %%, pack %+.2f s, synthesis %s"
                     % (vs["default"], vs["size_change_pct"], vs["pack_s_change"],
                        ", ".join("%+.3f s @%s" % (d, n)
                                  for n, d in vs["synthesis_s_change"].items())))
    return "\n".join(lines)


def main(argv=None):
    """Standalone: boot, customize, capture once, compare codecs; print JSON and a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)

    from cloudlet_compute import bases
    from cloudlet_compute.host import domains
    from cloudlet_compute.write import capture
    from stack.guest import guest
    from stack.story import Story

    conn = domains.connect()
    prefix = "bcod-%s" % uuid.uuid4().hex[:6]
    story = Story(conn, tempfile.mkdtemp(prefix="run-", dir=state_dir()), prefix)
    try:
        log("booting the guest (%s)", prefix)
        source = story.boot_source()
        base_id = story.create_base(source)
        guest.destroy(conn, source)
        cust = story.resume(base_id)
        story.customize(cust)
        work = os.path.join(story.root, "capture")
        os.makedirs(work)
        cap = capture.capture(conn, cust, work)
        guest.destroy(conn, cust)
        base = bases.BaseStore(story.home).get(base_id)
        content = overlay_content(base, cap.memory_path, cap.disk_path, work)
        shutil.rmtree(work)
        doc = compare(content)
    finally:
        story.cleanup()
    path = save_json("codecs.json", doc)
    print(json.dumps(doc, indent=1))
    if not args.json:
        print("\n" + table(doc), file=sys.stderr)
        log("saved %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
