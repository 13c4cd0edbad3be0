"""Measuring helpers of the handoff bench (``bench/handoff.py``): the guest's heartbeat read
from its ``console.log`` files, the link's device counters, iptables counters of one TCP flow
in netns ``stk-b``, and when the source and destination domains stop and run.
"""

import re
import subprocess
import threading
import time

import libvirt

from bench.handoff_procs import netns_argv
from bench.run import BenchError
from stack import topology

HB_PERIOD_US = 20000
HB_START = ("(__hb=0; while :; do __hb=$((__hb+1)); echo \"hb $__hb\"; usleep %d; done) "
            ">/dev/ttyS0 2>&1 </dev/null & HB_PID=$!; echo started $HB_PID" % HB_PERIOD_US)
HB_LINE = re.compile(rb"^hb (\d+)\r?$")
POLL = 0.005
LINK_DEV = "stkv-a"


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
        return subprocess.run(netns_argv(["iptables", "-w"] + list(args)), check=check,
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



def switch_figures(hb, src, dst, t_from, bytes0, watch, flows, background):
    """Once the guest is handed over: wait for heartbeat side ``dst``, stop the counters and
    ``watch``; return (the heartbeat gap from ``src`` to ``dst``, the wire figures) since
    ``t_from`` (``bytes0``: the link's counters then)."""
    hb.wait_for(dst, 100, 60)
    t_to = time.monotonic()
    bytes1 = link_bytes()
    watch.close()
    counted = flows.read()
    gap = hb.analyse(src, dst, t_from, t_to)
    return gap, wire(bytes0, bytes1, t_to - t_from, background, counted)


def timeline(t0, gap, watch, **more):
    marks = {"last_source_hb": gap["t_last_source"], "source_stopped": watch.t_src_stopped,
             "destination_running": watch.t_dst_running,
             "first_destination_hb": gap["t_first_destination"]}
    marks.update(more)
    return {k: (round(v - t0, 3) if v is not None else None) for k, v in marks.items()}
