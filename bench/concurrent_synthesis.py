"""``python -m bench.concurrent_synthesis``: VM syntheses through Nova, cold and warm, one and
several at once (issue 17, items 4 and 5).

On the embedded OpenStack (cloud a, one compute host, started if needed): the tiny guest's
base VM, made with the ``cloudlet`` CLI, is imported into Glance; a server resumed from it is
customized and ``cloudlet-overlay-finish`` makes its overlay image; the resumed server is
deleted. Then rounds of N servers POSTed at once with ``metadata.overlay_image`` (nova-compute
fetches the overlay from Glance):

* **cold, N=1**: the base VM evicted from the host's cache first, so the build fetches its
  disk and memory images from Glance; **warm, N=1**: the base cached (the baseline);
* **warm, N=2 and N=4**, and **cold, N=4** (the base fetched once for all four).

Per round: the wall time from the first POST until all are ACTIVE, each server's own time
(POST to ACTIVE, polled every 0.25 s), the base fetches nova-compute logged, and the ratio of
the wall time to N times the warm N=1 time (serial). Every server is checked against the
customized guest (memory and disk) before it is deleted. Peak RSS: nova-compute's (VmHWM)
and the bench's.

JSON on stdout (also ``.state/bench/concurrent_synthesis.json``), a table on stderr.
"""

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time

import stack
from bench import log, state_dir
from bench.run import BenchError, check_state, end_doc, run_and_publish, start_doc
from cloudlet_compute import bases, imagemodel as model
from cloudlet_compute.host import domains
from stack import paths, processes
from stack import story as storymod
from stack.novastory import NovaStory, delete_server

ROUNDS = (("cold", 1), ("warm", 1), ("warm", 2), ("warm", 4), ("cold", 4))
POLL = 0.25
FETCH_LINE = "fetching base VM %s from Glance"


def _compute_log():
    return paths.Paths(stack.cloud("a")).log("nova-compute")


def _compute_hwm_kib():
    pid = processes.running(paths.Paths(stack.cloud("a")), "nova-compute")
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _evict(conn, base_id):
    """Remove the base from nova-compute's cache (``[cloudlet] cache_dir``)."""
    cache = os.path.join(paths.Paths(stack.cloud("a")).state, "nova", "cloudlet")
    bases.BaseStore(cache).delete(base_id, conn)


def _wait_all(nova, servers, started, timeout=600):
    """Seconds from ``started`` until each server is ACTIVE (BenchError on ERROR)."""
    times, deadline = {}, time.monotonic() + timeout
    while len(times) < len(servers):
        for server in servers:
            if server.id in times:
                continue
            status = nova.demo.compute.get_server(server.id).status
            if status == "ACTIVE":
                times[server.id] = time.monotonic() - started
            elif status == "ERROR":
                raise BenchError("server %s went to ERROR" % server.name)
        if time.monotonic() > deadline:
            raise BenchError("servers not ACTIVE after %d s" % timeout)
        time.sleep(POLL)
    return [round(times[s.id], 2) for s in servers]


def _round(nova, conn, base_disk, base_id, overlay_id, expected, kind, n):
    if kind == "cold":
        _evict(conn, base_id)
    log_path = _compute_log()
    offset = os.path.getsize(log_path)
    started = time.monotonic()
    servers = []
    for i in range(n):
        servers.append(nova.demo.compute.create_server(
            name="%s-%s%d-%d" % (nova.tag, kind, n, i), image_id=base_disk,
            flavor_id=nova.flavor.id, networks="none",
            metadata={model.METADATA_OVERLAY_IMAGE: overlay_id}))
        nova.servers.append(servers[-1].id)
    per_vm = _wait_all(nova, servers, started)
    wall = round(time.monotonic() - started, 2)
    with open(log_path, errors="replace") as f:
        f.seek(offset)
        fetches = f.read().count(FETCH_LINE % base_id)
    for server in servers:
        check_state(expected, nova.observe(server.id), "%s N=%d %s" % (kind, n, server.name))
    for server in servers:
        delete_server(nova.demo, server.id)
    log("%s N=%d: all ACTIVE in %.1f s (each %s s), base fetched %d time(s); guests verified",
        kind, n, wall, per_vm, fetches)
    return {"cache": kind, "n": n, "wall_s": wall, "per_vm_s": per_vm,
            "base_fetches": fetches}


def produce():
    with contextlib.redirect_stdout(sys.stderr):    # stdout is the JSON document's
        stack.up(cloudlet=True)
    conn = domains.connect()
    doc, t_start = start_doc("concurrent_synthesis", conn)
    story = storymod.Story(conn, tempfile.mkdtemp(prefix="conc-", dir=state_dir()), "bconc")
    nova = NovaStory(stack.connect("cloudlet-demo"), stack.connect("cloudlet-admin"))
    try:
        log("making the base VM with the cloudlet CLI and importing it into Glance")
        base_id = story.create_base(story.boot_source())
        package = os.path.join(story.root, "base.zip")
        storymod.cloudlet(story.home, "base", "export", base_id, package)
        for name in list(story.domains):
            storymod.guest.destroy(conn, name)
        base_disk = nova.import_base(package)[model.BASE_DISK]
        resumed = nova.boot("resumed", base_disk)
        expected = nova.customize(resumed.id)
        overlay_id = nova.overlay_finish(resumed.id)
        delete_server(nova.demo, resumed.id)
        log("overlay image %s of the customized server made", overlay_id)
        rounds = [_round(nova, conn, base_disk, base_id, overlay_id, expected, kind, n)
                  for kind, n in ROUNDS]
    finally:
        nova.cleanup()
        story.cleanup()
    serial = next(r["wall_s"] for r in rounds if (r["cache"], r["n"]) == ("warm", 1))
    for r in rounds:
        r["over_serial"] = round(r["wall_s"] / (r["n"] * serial), 2)
    doc.update({"rounds": rounds, "serial_baseline_s": serial,
                "cold_over_warm_n1": round(rounds[0]["wall_s"] / serial, 2),
                "peak_rss_kib": {"nova_compute": _compute_hwm_kib(),
                                 "bench": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss},
                "workload": "tiny guest (256 MiB RAM, cl.tiny), overlay of the story's "
                            "customization, from Glance (metadata.overlay_image)"})
    for r in rounds:
        if r["base_fetches"] != (1 if r["cache"] == "cold" else 0):
            raise BenchError("%s N=%d: the base was fetched %d times"
                             % (r["cache"], r["n"], r["base_fetches"]))
    conn.close()
    return end_doc(doc, t_start)


def table(doc):
    lines = ["%-6s %3s %9s %14s %22s  %s" % ("cache", "N", "wall s", "wall/serial",
                                             "per VM s", "base fetches")]
    for r in doc["rounds"]:
        lines.append("%-6s %3d %9.1f %14.2f %22s  %d" % (
            r["cache"], r["n"], r["wall_s"], r["over_serial"],
            " ".join("%.1f" % t for t in r["per_vm_s"]), r["base_fetches"]))
    lines.append("serial baseline: warm N=1 %.1f s; cold/warm at N=1: %.2f; peak RSS "
                 "nova-compute %d MiB, bench %d MiB" % (
                     doc["serial_baseline_s"], doc["cold_over_warm_n1"],
                     doc["peak_rss_kib"]["nova_compute"] // 1024,
                     doc["peak_rss_kib"]["bench"] // 1024))
    return "\n".join(lines)


def main():
    argparse.ArgumentParser(description=__doc__).parse_args()
    return run_and_publish("concurrent_synthesis.json", produce, table)


if __name__ == "__main__":
    sys.exit(main())
