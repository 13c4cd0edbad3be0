"""``make bench``, handoff part: VM handoff against the naive way, over a 25 Mbit/s link.

Two customized VMs of the same base (the story of ``stack/story.py``), then over the
veth pair ``stkv-a`` (root namespace, 10.251.0.1) <-> ``stkv-b`` (netns ``stk-b``, 10.251.0.2)
shaped with ``tc ... tbf rate 25mbit`` in both directions:

* **ours**: ``cloudlet handoff send VM_A --listen 10.251.0.1`` in the root namespace,
  ``cloudlet handoff receive`` inside netns ``stk-b``;
* **naive**: ``virsh save`` of VM_B -> ``zstd -3`` of the save image and of the qcow2 top
  layer, streamed over TCP to a tiny receiver inside ``stk-b`` that pipes them into
  ``zstd -d`` -> ``virsh restore`` with the received disk and the received image.

Downtime is the largest gap, on the host clock, between heartbeats the guest prints every
20 ms on ttyS0 (a loop started in the guest through its command shell, so it lives in guest
memory and must go on at the destination), read from the source's and then the destination's
``console.log`` every 5 ms. Bytes on the wire: IP bytes of the transfer's own TCP
connection, both ways, counted by iptables rules in netns ``stk-b`` (the link also carries
cloud b's traffic; the device counters of ``stkv-a`` are reported beside them).
Both destination guests must report the customized state, or there are no figures.

JSON on stdout (also ``.state/bench/handoff.json``), a table on stderr. The measuring helpers
are in ``bench/handoff_measure.py``, the naive way and its receiver in ``bench/handoff_naive.py``,
the bench's subprocesses in ``bench/handoff_procs.py``.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

import libvirt

from bench import human, log, state_dir
from bench.handoff_measure import HB_PERIOD_US, POLL, DomainWatch, FlowCounter, Heartbeats, \
    background_rate, link_bytes, start_heartbeat, switch_figures, timeline
from bench.handoff_naive import run_naive
from bench.handoff_procs import Procs, finish, netns_argv, stderr_tail
from bench.run import BenchError, check_state, end_doc, run_and_publish, start_doc
from cloudlet_compute import bases
from stack import links, topology  # links: the veth pair and its shaping
from stack.guest import guest
from stack.story import CLI, CUSTOMIZE, Story

TARGET_BYTES = 0.3
TARGET_DOWNTIME = 0.2
RANDOM_PAYLOAD = (16 + 4) << 20   # unique random bytes of the customize step


def _env(home):
    return dict(os.environ, CLOUDLET_HOME=home)



# -- ours -------------------------------------------------------------------------------------------

def run_ours(story, conn, hb, procs, flows, src, dst, expected, background):
    """``cloudlet handoff send`` (root netns) -> ``receive`` (netns stk-b)."""
    ticket = os.path.join(story.root, "ticket")
    env = _env(story.home)
    start_heartbeat(lambda: story.channel(src))
    hb.watch("ours-src", os.path.join(story.home, "instances", src, guest.CONSOLE_LOG))
    hb.watch("ours-dst", os.path.join(story.home, "instances", dst, guest.CONSOLE_LOG))
    hb.wait_for("ours-src", 50, 30)
    t_from = time.monotonic()
    bytes0 = link_bytes()
    story.domains.append(dst)
    watch = DomainWatch(src, dst)
    sender = procs.start(CLI + ["handoff", "send", src, "--listen", topology.LINK_ROOT_IP,
                                "--ticket-file", ticket, "--json"], env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            with open(ticket) as f:
                if f.read().endswith("\n"):
                    break
        except FileNotFoundError:
            pass
        if sender.poll() is not None or time.monotonic() > deadline:
            raise BenchError("handoff send wrote no ticket: %s" % stderr_tail(sender))
        time.sleep(0.005)
    t_ticket = time.monotonic()
    with open(ticket) as f:
        port = int(re.match(r"tcp://[^/]*:(\d+)/", f.read()).group(1))
    flows.count(remote_port=port)
    t_counting = time.monotonic() - t_ticket   # not the handoff's: taken off its total
    receiver = procs.start(netns_argv(CLI + ["handoff", "receive", "@" + ticket, "--name", dst,
                                              "--json"]), env=env)
    recv_stats = json.loads(finish(receiver, "handoff receive", 900))
    t_received = time.monotonic()
    send_stats = json.loads(finish(sender, "handoff send", 120))
    t_sent = time.monotonic()
    gap, on_wire = switch_figures(hb, "ours-src", "ours-dst", t_from, bytes0, watch, flows,
                                  background)
    check_state(expected, story.observe(dst), "handed-off guest")
    out = {"total_s": round(t_received - t_ticket - t_counting, 3),
           "counter_setup_s": round(t_counting, 3),
           "sender_exit_s": round(t_sent - t_ticket - t_counting, 3),
           "downtime_s": gap["downtime_s"],
           "bytes_sent": send_stats["bytes_sent"],
           "bytes_received": recv_stats.get("bytes_received"),
           "heartbeat": gap, "sender": send_stats, "receiver": recv_stats}
    out.update(on_wire)
    # When did the guest stop and start, relative to the ticket (host clock)?
    out["timeline_s"] = timeline(t_ticket, gap, watch, receiver_exit=t_received,
                                  sender_exit=t_sent)
    return out



# -- the run ------------------------------------------------------------------------------------

def run(rate):
    conn = libvirt.open("qemu:///system")
    prefix = "bho-%s" % uuid.uuid4().hex[:6]
    story = Story(conn, tempfile.mkdtemp(prefix="run-", dir=state_dir()), prefix)
    doc, t_start = start_doc("handoff", conn)
    procs, hb, flows = Procs(), Heartbeats(), FlowCounter("BHO-" + prefix[4:])
    made_link = False
    libvirt.registerErrorHandler(lambda *_: None, None)   # lookups of absent domains: quiet
    try:
        made_link = links.ensure_link()
        log("booting the tiny guest (domains %s-*)", prefix)
        source = story.boot_source()
        base_id = story.create_base(source)
        guest.destroy(conn, source)
        base = bases.BaseStore(story.home).get(base_id)
        vm_a, vm_b = story.resume(base_id, "ours"), story.resume(base_id, "naive")
        expected = {vm_a: story.customize(vm_a), vm_b: story.customize(vm_b)}
        conn.lookupByName(vm_b).suspend()           # idle while ours is measured
        doc["workload"] = {"customize": CUSTOMIZE, "guest_ram_bytes": base.ram_size,
                           "disk_bytes": base.disk_size,
                           "heartbeat": "guest loop: echo hb N > /dev/ttyS0; usleep %d"
                                        % HB_PERIOD_US}

        flows.open()
        links.shape_link(rate)
        doc["link"] = {"rate": rate, "qdiscs": links.link_qdiscs(),
                       "path": "%s (%s, root netns) -> %s (%s, netns %s)" % (
                           topology.LINK_ROOT_DEV, topology.LINK_ROOT_IP, topology.LINK_NS_DEV,
                           topology.LINK_NS_IP, topology.LINK_NETNS),
                       "created_by_bench": made_link}
        bg = background_rate()
        doc["link"]["background_bytes_per_s"] = round(bg)
        log("link shaped to %s; background traffic %.0f B/s", rate, bg)

        log("ours: cloudlet handoff send %s -> receive (netns %s)", vm_a, topology.LINK_NETNS)
        ours = run_ours(story, conn, hb, procs, flows, vm_a, story.name("ours-dst"), expected[vm_a], bg)
        log("ours: %.2f s, downtime %.3f s, %s on the link; guest state verified",
            ours["total_s"], ours["downtime_s"], human(ours["bytes"]))
        guest.destroy(conn, story.name("ours-dst"))   # free the CPU for the naive way

        conn.lookupByName(vm_b).resume()
        log("naive: save %s -> zstd -3 over the link -> restore", vm_b)
        naive = run_naive(story, conn, hb, procs, flows, vm_b, base_id, expected[vm_b], bg)
        log("naive: %.2f s, downtime %.3f s, %s on the link; guest state verified",
            naive["total_s"], naive["downtime_s"], human(naive["bytes"]))
        doc["ours"], doc["naive"] = ours, naive
        doc["ratios"] = {
            "bytes_ours_over_naive": round(ours["bytes"] / naive["bytes"], 4),
            "payload_ours_over_naive": round(ours["bytes_sent"] / naive["payload_bytes"], 4),
            "random_payload_over_naive": round(RANDOM_PAYLOAD / naive["bytes"], 4),
            "downtime_ours_over_naive": round(ours["downtime_s"] / naive["downtime_s"], 4),
            "total_ours_over_naive": round(ours["total_s"] / naive["total_s"], 4),
            "target_bytes": TARGET_BYTES, "target_downtime": TARGET_DOWNTIME}
        r = doc["ratios"]
        r["meets_bytes_target"] = r["bytes_ours_over_naive"] <= TARGET_BYTES
        r["meets_downtime_target"] = r["downtime_ours_over_naive"] <= TARGET_DOWNTIME
        doc["verified"] = ("both destination guests report the customized state (var, rand, "
                           "file, copy, tick >= customized); the heartbeat counter continues "
                           "at both destinations")
    finally:
        hb.close()
        procs.kill_all()
        try:
            links.unshape_link()
            flows.close()
        finally:
            story.cleanup()
    return end_doc(doc, t_start)


def table(doc):
    o, n, r = doc["ours"], doc["naive"], doc["ratios"]
    yes = {True: "met", False: "NOT met"}
    rows = [
        ("", "ours", "naive", "ours/naive"),
        ("total time", "%.2f s" % o["total_s"], "%.2f s" % n["total_s"],
         "%.2fx" % r["total_ours_over_naive"]),
        ("downtime (heartbeat gap)", "%.3f s" % o["downtime_s"], "%.3f s" % n["downtime_s"],
         "%.2fx (target <= %.1fx: %s)" % (r["downtime_ours_over_naive"], TARGET_DOWNTIME,
                                          yes[r["meets_downtime_target"]])),
        ("bytes on the link (IP, both ways)", human(o["bytes"]), human(n["bytes"]),
         "%.2fx (target <= %.1fx: %s)" % (r["bytes_ours_over_naive"], TARGET_BYTES,
                                          yes[r["meets_bytes_target"]])),
        ("payload (sender's count)", human(o["bytes_sent"]), human(n["payload_bytes"]),
         "%.2fx" % r["payload_ours_over_naive"]),
    ]
    s = o["sender"]
    lines = ["link %s (tbf both ways), heartbeat every %.0f ms, polled every %.0f ms; load "
             "average %.1f -> %.1f" % (doc["link"]["rate"], HB_PERIOD_US / 1000, POLL * 1000,
                                       doc["host"]["loadavg_start"][0],
                                       doc["host"]["loadavg_end"][0])]
    lines += ["%-28s %12s %12s  %s" % row for row in rows]
    lines.append("ours: QEMU downtime %d ms, sender stop->verdict %.2f s, receiver after END "
                 "%.2f s; naive: save %.2f s, zstd+send+unzstd %.2f s, restore %.2f s" % (
                     s["qemu_downtime_ms"], s["downtime_to_verdict"],
                     o["receiver"]["after_end"], n["phases_s"]["save"],
                     n["phases_s"]["compress_send_decompress"], n["phases_s"]["restore"]))
    for name, x in (("ours (s from ticket)", o), ("naive (s from save)", n)):
        lines.append("%s: %s" % (name, ", ".join(
            "%s %s" % (k, "-" if v is None else "%.2f" % v) for k, v in x["timeline_s"].items())))
    lines.append("other traffic on the link meanwhile: ours %s, naive %s" % (
        human(o["other_traffic_bytes"]), human(n["other_traffic_bytes"])))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", default="25mbit", help="tbf rate of the link (%(default)s)")
    args = parser.parse_args(argv)
    return run_and_publish("handoff.json", lambda: run(args.rate), table, (
        links.LinkError, libvirt.libvirtError, subprocess.CalledProcessError))


if __name__ == "__main__":
    sys.exit(main())