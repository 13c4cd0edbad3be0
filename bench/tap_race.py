"""The tap flag race of issue 12, provoked on a private Open vSwitch (userspace datapath).

Each round does what nova, os-vif and libvirt do for a guest NIC: the OVS port exists before
its device (os-vif's delegated plug); the tap is created, then set UP the way libvirt does
(read flags, write them back with IFF_UP). ovs-vswitchd is frozen while the tap is created
and thawed just before the UP, so that its taking the tap (cached flags | PROMISC, written
back) falls near libvirt's write, as it does on a loaded host. The figures: rounds whose tap
the switch left down (the baseline, stock behaviour) and rounds still down after
``cloudlet_compute.nova.taps.settle`` (the fix), from the same rounds.

    .venv/bin/python -m bench.tap_race [--rounds N]
"""

import argparse
import fcntl
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import bench
from cloudlet_compute.nova import taps

TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
BRIDGE = "brtaprace"


class PrivateSwitch:
    """ovsdb-server + ovs-vswitchd in a temporary directory, one netdev bridge."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="taprace-", dir=bench.state_dir())
        self.db = "unix:%s/db.sock" % self.dir
        env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir, OVS_DBDIR=self.dir)
        run = lambda *cmd: subprocess.run(cmd, check=True, env=env,  # noqa: E731
                                          stderr=subprocess.DEVNULL)
        run("ovsdb-tool", "create", self.dir + "/conf.db",
            "/usr/share/openvswitch/vswitch.ovsschema")
        run("ovsdb-server", self.dir + "/conf.db", "--remote=p" + self.db,
            "--pidfile=%s/ovsdb.pid" % self.dir, "--detach", "--log-file=%s/ovsdb.log" % self.dir)
        self.vsctl("--no-wait", "init")
        run("ovs-vswitchd", self.db, "--pidfile=%s/vswitchd.pid" % self.dir, "--detach",
            "--log-file=%s/vswitchd.log" % self.dir)
        self.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev")
        with open(self.dir + "/vswitchd.pid") as f:
            self.vswitchd = int(f.read())

    def vsctl(self, *args):
        subprocess.run(["ovs-vsctl", "--db=" + self.db] + list(args), check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self):
        for name in ("vswitchd", "ovsdb"):
            try:
                with open("%s/%s.pid" % (self.dir, name)) as f:
                    os.kill(int(f.read()), signal.SIGTERM)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
        time.sleep(0.5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _ifreq(sock, request, name, flags=0):
    packed = struct.pack("16sH", name.encode(), flags)
    return struct.unpack("16sH", fcntl.ioctl(sock, request, packed))[1]


def one_round(switch, sock, name, delay):
    """Create ``name`` for an existing OVS port, set it UP libvirt's way ``delay`` s after
    thawing the switch; return (down once the switch took it, down after settle), or None
    when the switch did not take the tap within 10 s."""
    switch.vsctl("--may-exist", "add-port", BRIDGE, name)
    os.kill(switch.vswitchd, signal.SIGSTOP)
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    finally:
        os.kill(switch.vswitchd, signal.SIGCONT)
    try:
        until = time.perf_counter() + delay
        while time.perf_counter() < until:
            pass
        _ifreq(sock, SIOCSIFFLAGS, name, _ifreq(sock, SIOCGIFFLAGS, name) | taps.IFF_UP)
        deadline = time.monotonic() + 10
        while not _ifreq(sock, SIOCGIFFLAGS, name) & taps.IFF_PROMISC:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)
        time.sleep(0.05)
        lost = not _ifreq(sock, SIOCGIFFLAGS, name) & taps.IFF_UP
        taps.settle([name], enable=lambda dev: _ifreq(
            sock, SIOCSIFFLAGS, dev, _ifreq(sock, SIOCGIFFLAGS, dev) | taps.IFF_UP))
        still = not _ifreq(sock, SIOCGIFFLAGS, name) & taps.IFF_UP
        return lost, still
    finally:
        switch.vsctl("del-port", BRIDGE, name)
        os.close(fd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    t0 = time.monotonic()
    switch = PrivateSwitch()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lost = still = not_taken = 0
    try:
        for i in range(args.rounds):
            outcome = one_round(switch, sock, "taprace%d" % i, (i % 10) * 0.0001)
            if outcome is None:
                not_taken += 1
            else:
                lost += outcome[0]
                still += outcome[1]
            if (i + 1) % 50 == 0:
                bench.log("%d rounds: %d left down by the switch, %d after settle, "
                          "%d not taken", i + 1, lost, still, not_taken)
    finally:
        switch.close()
    doc = {"rounds": args.rounds, "left_down_by_switch": lost, "down_after_settle": still,
           "not_taken_by_switch": not_taken,
           "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           "bench_wall_s": time.monotonic() - t0}
    table = ("tap flag race, %d rounds (private OVS, userspace datapath)\n"
             "  stock (libvirt UP, then the switch takes the tap): %d taps left down\n"
             "  with taps.settle:                                   %d taps left down\n"
             "  (rounds whose tap the switch did not take in 10 s:  %d)"
             % (args.rounds, lost, still, not_taken))
    bench.publish("tap_race.json", doc, table)
    return 1 if still else 0


if __name__ == "__main__":
    sys.exit(main())
