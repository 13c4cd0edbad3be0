"""Handoff's final disk pass (the guest is stopped: part of the downtime), from QEMU's dirty
bitmap against a rescan of the whole top layer, in the same run.

The tiny guest resumed from its base writes WRITTEN_MIB of random data to its disk, then
keeps rewriting a 1 MiB file (``stack.story.DISK_WRITER``) while ``cloudlet handoff send``
moves it over loopback to ``cloudlet handoff receive`` on this host; once with the bitmap
(the default), once with ``--rescan-disk``, alternating, ``--runs`` times each. The
destination's disk must hold what its page cache does, or there are no figures.
No embedded stack, no network namespace: only libvirt.

JSON on stdout (also ``.state/bench/handoff_disk.json``), a table on stderr.
"""

import argparse
import json
import os
import sys
import time

from bench import log, median, state_dir
from bench.handoff_procs import Procs, finish, stderr_tail
from bench.run import BenchError, end_doc, run_and_publish, start_doc
from cloudlet_compute.host import domains
from stack import story as storymod
from stack.guest import guest

WRITTEN_MIB = 40          # what fits beside the file system on the tiny guest's 64 MiB disk
METHODS = ("bitmap", "rescan")


def _handoff(story, procs, src, dst, method):
    ticket = os.path.join(story.root, "ticket-" + dst)
    env = dict(os.environ, CLOUDLET_HOME=story.home)
    extra = ["--rescan-disk"] if method == "rescan" else []
    sender = procs.start(storymod.CLI + ["handoff", "send", src, "--listen", "127.0.0.1",
                                         "--ticket-file", ticket, "--json"] + extra, env=env)
    deadline = time.monotonic() + 60
    while not (os.path.exists(ticket) and open(ticket).read().endswith("\n")):
        if sender.poll() is not None or time.monotonic() > deadline:
            raise BenchError("handoff send wrote no ticket: %s" % stderr_tail(sender))
        time.sleep(0.01)
    story.domains.append(dst)
    receiver = procs.start(storymod.CLI + ["handoff", "receive", "@" + ticket, "--name", dst,
                                           "--json"], env=env)
    finish(receiver, "handoff receive", 600)
    stats = json.loads(finish(sender, "handoff send", 120))
    with story.channel(dst) as chan:
        verdict = chan.run(storymod.DISK_EQUALS_CACHE, timeout=60).strip()
    if verdict != "same":
        raise BenchError("after the %s handoff the destination's disk differs from what its "
                         "guest wrote" % method)
    final = stats["disk_final"]
    if final["method"] != method:
        raise BenchError("asked for a %s final pass, got %s" % (method, final["method"]))
    return {"final_pass_s": final["seconds"], "chunks_read": final["chunks_read"],
            "chunks_sent": final["chunks_sent"], "first_pass_chunks": stats["disk_early_chunks"],
            "qemu_downtime_ms": stats["qemu_downtime_ms"],
            "downtime_to_verdict_s": round(stats["downtime_to_verdict"], 3),
            "total_s": round(stats["total"], 3)}


def run(runs):
    conn = domains.connect()
    doc, t_start = start_doc("handoff_disk", conn)
    story = storymod.Story(conn, os.path.join(state_dir(), "handoff-disk-tmp"))
    procs = Procs()
    try:
        base_id = story.create_base(story.boot_source())
        guest.destroy(conn, story.name("src"))
        results = {m: [] for m in METHODS}
        for n in range(runs):
            for method in METHODS:
                src = story.resume(base_id, role="%s%d" % (method, n))
                with story.channel(src) as chan:
                    chan.run("head -c %d /dev/urandom > /mnt/written; sync"
                             % (WRITTEN_MIB << 20), timeout=300)
                    chan.run(storymod.DISK_WRITER, timeout=60)
                dst = story.name("%s%d-dst" % (method, n))
                results[method].append(_handoff(story, procs, src, dst, method))
                log("%s run %d: %s", method, n, results[method][-1])
                guest.destroy(conn, dst)
    finally:
        procs.kill_all()
        story.cleanup()
    doc["written_before_MiB"], doc["rewritten_during_MiB"] = WRITTEN_MIB, 1
    doc["runs"] = results
    doc["median"] = {m: {k: median([r[k] for r in results[m]]) for k in results[m][0]}
                     for m in METHODS}
    doc["final_pass_ratio_bitmap_over_rescan"] = round(
        doc["median"]["bitmap"]["final_pass_s"] / doc["median"]["rescan"]["final_pass_s"], 3)
    return end_doc(doc, t_start)


def table(doc):
    rows = ["Handoff final disk pass (guest stopped), tiny guest, %d MiB written before, "
            "a 1 MiB file rewritten during; medians of %d runs"
            % (doc["written_before_MiB"], len(doc["runs"]["bitmap"])),
            "%-8s %14s %12s %12s %18s %16s" % ("method", "final pass s", "chunks read",
                                             "chunks sent", "downtime->verdict", "QEMU stop ms")]
    for method in METHODS:
        m = doc["median"][method]
        rows.append("%-8s %14.4f %12d %12d %18.3f %16d" % (
            method, m["final_pass_s"], m["chunks_read"], m["chunks_sent"],
            m["downtime_to_verdict_s"], m["qemu_downtime_ms"]))
    rows.append("final pass bitmap/rescan: %.3fx" % doc["final_pass_ratio_bitmap_over_rescan"])
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="handoffs per method (median)")
    args = parser.parse_args(argv)
    return run_and_publish("handoff_disk.json", lambda: run(args.runs), table)


if __name__ == "__main__":
    sys.exit(main())
