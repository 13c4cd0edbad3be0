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

JSON on stdout (also ``.state/bench/handoff.json``), a table on stderr. ``--naive-receiver``
is the naive receiver itself (run by the bench inside ``stk-b``).
"""

import argparse
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HB_PERIOD_US = 20000
HB_START = ("(__hb=0; while :; do __hb=$((__hb+1)); echo \"hb $__hb\"; usleep %d; done) "
            ">/dev/ttyS0 2>&1 </dev/null & HB_PID=$!; echo started $HB_PID" % HB_PERIOD_US)
HB_LINE = re.compile(rb"^hb (\d+)\r?$")
POLL = 0.005
LINK_DEV = "stkv-a"
TARGET_BYTES = 0.3
TARGET_DOWNTIME = 0.2
RANDOM_PAYLOAD = (16 + 4) << 20   # unique random bytes of the customize step


# -- the naive receiver (runs inside netns stk-b) -----------------------------------------------

def _recv_exact(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError("sender closed the connection")
        buf += chunk
    return bytes(buf)


def naive_receiver(host, port, outdir):
    """Accept one connection; per file: u16 name length, name, u32-framed zstd data (0 ends
    it) piped into ``zstd -d``; a zero name length ends; answer b"K" once all are written."""
    srv = socket.create_server((host, port))
    print("listening %d" % srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    srv.close()
    while True:
        (nlen,) = struct.unpack(">H", _recv_exact(conn, 2))
        if not nlen:
            break
        name = _recv_exact(conn, nlen).decode()
        if "/" in name or name.startswith("."):
            raise ValueError("bad name %r" % name)
        dec = subprocess.Popen(["zstd", "-d", "-q", "-f", "-o", os.path.join(outdir, name)],
                               stdin=subprocess.PIPE)
        while True:
            (size,) = struct.unpack(">I", _recv_exact(conn, 4))
            if not size:
                break
            dec.stdin.write(_recv_exact(conn, size))
        dec.stdin.close()
        if dec.wait():
            raise RuntimeError("zstd -d of %s failed" % name)
    conn.sendall(b"K")
    conn.close()
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--naive-receiver"]:
    sys.exit(naive_receiver(sys.argv[2], int(sys.argv[3]), sys.argv[4]))

import datetime  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402

import libvirt  # noqa: E402

from bench import human, log, publish, state_dir  # noqa: E402
from bench.run import BenchError, check_state, host_info  # noqa: E402
from cloudlet_compute import bases  # noqa: E402
from cloudlet_compute.host import domxml  # noqa: E402
from stack import links, topology  # noqa: E402  (links: the veth pair and its shaping)
from stack.guest import guest  # noqa: E402
from stack.story import CLI, CUSTOMIZE, OBSERVE, Story, make_dir, \
    parse_observation  # noqa: E402


# -- measuring ----------------------------------------------------------------------------------

class Heartbeats:
    """Tails console.log files every POLL s; records (host time, side, n) of each ``hb n``."""

    def __init__(self):
        self.files = {}      # side -> [path, file or None, partial line]
        self.events = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def watch(self, side, path):
        with self.lock:
            self.files[side] = [path, None, b""]

    def _poll(self):
        now = time.monotonic()
        with self.lock:
            for side, entry in self.files.items():
                path, f, partial = entry
                if f is None:
                    try:   # kept open: the sender deletes the source's directory
                        f = entry[1] = open(path, "rb")
                    except OSError:
                        continue
                data = f.read()
                if not data:
                    continue
                lines = (partial + data).split(b"\n")
                entry[2] = lines.pop()
                for line in lines:
                    m = HB_LINE.match(line.strip(b"\0"))
                    if m:
                        self.events.append((now, side, int(m.group(1))))

    def _loop(self):
        while not self._stop.is_set():
            self._poll()
            time.sleep(POLL)

    def close(self):
        self._stop.set()
        self._thread.join()
        for _, f, _ in self.files.values():
            if f:
                f.close()

    def count(self, side):
        with self.lock:
            return sum(1 for e in self.events if e[1] == side)

    def wait_for(self, side, n, timeout):
        deadline = time.monotonic() + timeout
        while self.count(side) < n:
            if time.monotonic() > deadline:
                raise BenchError("heartbeat: fewer than %d lines from %s within %.0f s"
                                 % (n, side, timeout))
            time.sleep(0.05)

    def analyse(self, src, dst, t_from, t_to):
        """The gap across the switch from ``src`` to ``dst`` between two host times."""
        with self.lock:
            ev = [e for e in self.events if t_from <= e[0] <= t_to]
        s = [e for e in ev if e[1] == src]
        d = [e for e in ev if e[1] == dst]
        if not s or len(d) < 10:
            raise BenchError("heartbeat: %d lines from the source, %d from the destination: "
                             "the guest's heartbeat did not go on after the switch"
                             % (len(s), len(d)))
        if d[0][2] <= s[-1][2]:
            raise BenchError("heartbeat: the destination's counter (%d) does not continue "
                             "the source's (%d)" % (d[0][2], s[-1][2]))
        times = [e[0] for e in ev]
        gaps = [b - a for a, b in zip(times, times[1:])]
        pre = [e[0] for e in s if e[0] <= s[-1][0] - 0.0]
        pre_gaps = [b - a for a, b in zip(pre, pre[1:])]
        post = [e[0] for e in d]
        post_gaps = [b - a for a, b in zip(post, post[1:])]
        return {
            "downtime_s": round(d[0][0] - s[-1][0], 3),
            "largest_gap_s": round(max(gaps), 3),
            "last_source_hb": s[-1][2], "first_destination_hb": d[0][2],
            "lost_hb": d[0][2] - s[-1][2] - 1,
            "source_hb": len(s), "destination_hb": len(d),
            "t_last_source": s[-1][0], "t_first_destination": d[0][0],
            "largest_gap_before_s": round(max(pre_gaps), 3) if pre_gaps else None,
            "largest_gap_after_s": round(max(post_gaps), 3) if post_gaps else None,
            "period_s": HB_PERIOD_US / 1e6, "poll_s": POLL}


def link_bytes():
    """(tx, rx) byte counters of the root end of the link."""
    base = "/sys/class/net/%s/statistics/" % LINK_DEV
    with open(base + "tx_bytes") as tx, open(base + "rx_bytes") as rx:
        return int(tx.read()), int(rx.read())


def background_rate(seconds=3.0):
    """Bytes/s crossing the link with nothing of ours on it (cloud b may use it)."""
    a = link_bytes()
    time.sleep(seconds)
    b = link_bytes()
    return (b[0] - a[0] + b[1] - a[1]) / seconds


def wire(before, after, seconds, background, counted):
    """Bytes of our flow (iptables, IP bytes both ways) and of the whole device."""
    tx, rx = after[0] - before[0], after[1] - before[1]
    ours = counted["in_bytes"] + counted["out_bytes"]
    ours_l2 = ours + 14 * (counted["in_packets"] + counted["out_packets"])
    return {"bytes": ours, "flow": counted,
            "device_tx_bytes": tx, "device_rx_bytes": rx,
            "other_traffic_bytes": tx + rx - ours_l2,
            "background_expected_bytes": int(background * seconds)}


class FlowCounter:
    """iptables byte counters, inside netns stk-b, of one TCP flow over the link: what arrived
    over the wire (INPUT) and what left toward the root namespace (OUTPUT), IP bytes."""

    def __init__(self, name):
        self.chain = name

    def open(self):
        self._ipt("-N", self.chain)
        for hook in ("INPUT", "OUTPUT"):
            self._ipt("-I", hook, "1", "-j", self.chain)

    @staticmethod
    def _ipt(*args, check=True):
        return subprocess.run(_ns(["iptables", "-w"] + list(args)), check=check,
                              capture_output=True, text=True)

    def count(self, remote_port=None, local_port=None):
        """Count the flow to a port listening at 10.251.0.1 or at 10.251.0.2."""
        self._ipt("-F", self.chain)
        peer = topology.LINK_ROOT_IP
        if remote_port:
            rules = (("-s", peer, "--sport", remote_port), ("-d", peer, "--dport", remote_port))
        else:
            rules = (("-s", peer, "--dport", local_port), ("-d", peer, "--sport", local_port))
        for r in rules:
            self._ipt("-A", self.chain, "-p", "tcp", r[0], r[1], r[2], str(r[3]))

    def read(self):
        """{in_bytes, out_bytes, in_packets, out_packets}: in = toward stk-b (the data)."""
        out = self._ipt("-L", self.chain, "-n", "-v", "-x").stdout.splitlines()[2:]
        rows = [line.split() for line in out if line.strip()]
        if len(rows) != 2:
            raise BenchError("iptables counters: %r" % out)
        return {"in_packets": int(rows[0][0]), "in_bytes": int(rows[0][1]),
                "out_packets": int(rows[1][0]), "out_bytes": int(rows[1][1])}

    def close(self):
        for hook in ("INPUT", "OUTPUT"):
            self._ipt("-D", hook, "-j", self.chain, check=False)
        self._ipt("-F", self.chain, check=False)
        self._ipt("-X", self.chain, check=False)


class DomainWatch:
    """Polls (own libvirt connection, every POLL s) when the source domain stops running and
    when the destination domain runs, on the host clock."""

    def __init__(self, src, dst):
        self.src, self.dst = src, dst
        self.t_src_stopped = self.t_dst_running = None
        self._stop = threading.Event()
        self._conn = libvirt.open("qemu:///system")
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _state(self, name):
        try:
            return self._conn.lookupByName(name).state()[0]
        except libvirt.libvirtError:
            return None

    def _loop(self):
        while not self._stop.is_set():
            now = time.monotonic()
            if self.t_src_stopped is None and \
                    self._state(self.src) != libvirt.VIR_DOMAIN_RUNNING:
                self.t_src_stopped = now
            if self.t_dst_running is None and \
                    self._state(self.dst) == libvirt.VIR_DOMAIN_RUNNING:
                self.t_dst_running = now
            time.sleep(POLL)

    def close(self):
        self._stop.set()
        self._thread.join()
        self._conn.close()


def start_heartbeat(chan_factory):
    with chan_factory() as chan:
        out = chan.run(HB_START)
    if "started" not in out:
        raise BenchError("heartbeat did not start: %r" % out)


def _env(home):
    return dict(os.environ, CLOUDLET_HOME=home)


def _ns(argv):
    return ["ip", "netns", "exec", topology.LINK_NETNS] + argv


class Procs:
    """Subprocesses of this bench; killed (by their own pid) if still running at the end."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        """Start ``argv``: stdout a pipe, stderr a file (a chatty child never blocks)."""
        err = tempfile.TemporaryFile("w+")
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, **kw)
        p.errfile = err
        self.procs.append(p)
        return p

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.errfile.close()


def _stderr(proc):
    proc.errfile.seek(0)
    return proc.errfile.read()[-2000:]


def _finish(proc, what, timeout):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError("%s did not finish within %d s: %s" % (what, timeout, _stderr(proc)))
    if proc.returncode:
        raise BenchError("%s exited with %d: %s" % (what, proc.returncode, _stderr(proc)))
    return out


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
            raise BenchError("handoff send wrote no ticket: %s" % _stderr(sender))
        time.sleep(0.005)
    t_ticket = time.monotonic()
    with open(ticket) as f:
        port = int(re.match(r"tcp://[^/]*:(\d+)/", f.read()).group(1))
    flows.count(remote_port=port)
    t_counting = time.monotonic() - t_ticket   # not the handoff's: taken off its total
    receiver = procs.start(_ns(CLI + ["handoff", "receive", "@" + ticket, "--name", dst,
                                      "--json"]), env=env)
    recv_stats = json.loads(_finish(receiver, "handoff receive", 900))
    t_received = time.monotonic()
    send_stats = json.loads(_finish(sender, "handoff send", 120))
    t_sent = time.monotonic()
    hb.wait_for("ours-dst", 100, 60)
    t_to = time.monotonic()
    bytes1 = link_bytes()
    watch.close()
    counted = flows.read()
    gap = hb.analyse("ours-src", "ours-dst", t_from, t_to)
    check_state(expected, story.observe(dst), "handed-off guest")
    out = {"total_s": round(t_received - t_ticket - t_counting, 3),
           "counter_setup_s": round(t_counting, 3),
           "sender_exit_s": round(t_sent - t_ticket - t_counting, 3),
           "downtime_s": gap["downtime_s"],
           "bytes_sent": send_stats["bytes_sent"],
           "bytes_received": recv_stats.get("bytes_received"),
           "heartbeat": gap, "sender": send_stats, "receiver": recv_stats}
    out.update(wire(bytes0, bytes1, t_to - t_from, background, counted))
    # When did the guest stop and start, relative to the ticket (host clock)?
    out["timeline_s"] = _timeline(t_ticket, gap, watch, receiver_exit=t_received,
                                  sender_exit=t_sent)
    return out


def _timeline(t0, gap, watch, **more):
    marks = {"last_source_hb": gap["t_last_source"], "source_stopped": watch.t_src_stopped,
             "destination_running": watch.t_dst_running,
             "first_destination_hb": gap["t_first_destination"]}
    marks.update(more)
    return {k: (round(v - t0, 3) if v is not None else None) for k, v in marks.items()}


# -- naive --------------------------------------------------------------------------------------

def _send_file(sock, name, path):
    """Stream ``zstd -3 -c path`` into ``sock`` as one framed file; return compressed bytes."""
    sock.sendall(struct.pack(">H", len(name)) + name.encode())
    comp = subprocess.Popen(["zstd", "-3", "-q", "-c", path], stdout=subprocess.PIPE)
    total = 0
    while True:
        chunk = comp.stdout.read(1 << 20)
        if not chunk:
            break
        total += len(chunk)
        sock.sendall(struct.pack(">I", len(chunk)) + chunk)
    sock.sendall(struct.pack(">I", 0))
    if comp.wait():
        raise BenchError("zstd -3 of %s failed" % path)
    return total


def run_naive(story, conn, hb, procs, flows, name, base_id, expected, background):
    """save -> zstd -3 (image + top layer) over the link into zstd -d -> restore."""
    inst = os.path.join(story.home, "instances", name)
    recv_dir = make_dir(os.path.join(story.root, "naive-dst"))
    image = os.path.join(story.root, "naive-save.img")
    start_heartbeat(lambda: story.channel(name))
    hb.watch("naive-src", os.path.join(inst, guest.CONSOLE_LOG))
    hb.watch("naive-dst", os.path.join(recv_dir, guest.CONSOLE_LOG))
    hb.wait_for("naive-src", 50, 30)
    t_from = time.monotonic()
    # By path: the receiver needs the standard library only (it exits before the imports).
    receiver = procs.start(_ns([sys.executable, os.path.abspath(__file__), "--naive-receiver",
                                topology.LINK_NS_IP, "0", recv_dir]))
    ready = receiver.stdout.readline().split()
    if ready[:1] != ["listening"]:
        raise BenchError("naive receiver did not start: %s" % _stderr(receiver))
    port = int(ready[1])
    dom = conn.lookupByName(name)
    dom_uuid = dom.UUIDString()
    flows.count(local_port=port)
    watch = DomainWatch(name, name + "-gone")
    bytes0 = link_bytes()
    t0 = time.monotonic()
    dom.save(image)                                  # virsh save: the guest stops here
    t_saved = time.monotonic()
    sizes = {"save_image": os.path.getsize(image),
             "disk_top_layer": os.path.getsize(os.path.join(inst, "disk.qcow2"))}
    with socket.create_connection((topology.LINK_NS_IP, port), timeout=600) as sock:
        sent = {"disk.qcow2": _send_file(sock, "disk.qcow2", os.path.join(inst, "disk.qcow2")),
                "save.img": _send_file(sock, "save.img", image)}
        sock.sendall(struct.pack(">H", 0))
        if _recv_exact(sock, 1) != b"K":
            raise BenchError("naive receiver did not confirm")
    t_sent = time.monotonic()
    _finish(receiver, "naive receiver", 60)
    recv_image = os.path.join(recv_dir, "save.img")
    xml = domxml.for_instance(conn.saveImageGetXMLDesc(recv_image, 0), name,
                              os.path.join(recv_dir, "disk.qcow2"), recv_dir, base_id, dom_uuid)
    watch.dst = name   # the same name again: from now on, watch for it running
    conn.restoreFlags(recv_image, xml, libvirt.VIR_DOMAIN_SAVE_RUNNING)   # virsh restore
    t_restored = time.monotonic()
    hb.wait_for("naive-dst", 100, 60)
    t_to = time.monotonic()
    bytes1 = link_bytes()
    watch.close()
    counted = flows.read()
    gap = hb.analyse("naive-src", "naive-dst", t_from, t_to)
    chan = guest.GuestChannel(unix_path=os.path.join(recv_dir, guest.CMD_SOCK))
    with chan:
        chan.wait_ready(60)
        check_state(expected, parse_observation(chan.run(OBSERVE)), "naive restored guest")
    out = {"total_s": round(t_restored - t0, 3), "downtime_s": gap["downtime_s"],
           "phases_s": {"save": round(t_saved - t0, 3),
                        "compress_send_decompress": round(t_sent - t_saved, 3),
                        "restore": round(t_restored - t_sent, 3)},
           "payload_bytes": sum(sent.values()), "compressed_bytes": sent,
           "plain_bytes": sizes, "heartbeat": gap,
           "how": "virsh save (libvirt dom.save) -> zstd -3 -c of the disk's qcow2 top layer "
                  "and of the save image, streamed (1 MiB frames, one TCP connection) to a "
                  "receiver in netns stk-b piping them into zstd -d -> virsh restore "
                  "(restoreFlags RUNNING) of the received image with the received qcow2 "
                  "(over the same base disk) and the consoles in the receive directory"}
    out.update(wire(bytes0, bytes1, t_to - t_from, background, counted))
    out["timeline_s"] = _timeline(t0, gap, watch, saved=t_saved, received=t_sent,
                                  restored=t_restored)
    return out


# -- the run ------------------------------------------------------------------------------------

def run(rate):
    conn = libvirt.open("qemu:///system")
    prefix = "bho-%s" % uuid.uuid4().hex[:6]
    story = Story(conn, tempfile.mkdtemp(prefix="run-", dir=state_dir()), prefix)
    doc = {"bench": "handoff",
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "host": host_info(conn)}
    doc["host"]["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    doc["host"]["other_domains_running"] = conn.numOfDomains()
    t_start = time.monotonic()
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
    doc["host"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["bench_wall_s"] = round(time.monotonic() - t_start, 1)
    return doc


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
    try:
        doc = run(args.rate)
    except (BenchError, guest.GuestError, links.LinkError, libvirt.libvirtError,
            subprocess.CalledProcessError) as exc:
        log("FAILED: %s", exc)
        return 1
    publish("handoff.json", doc, table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
