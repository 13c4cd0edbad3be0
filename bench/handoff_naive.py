"""The naive baseline of the handoff bench (``bench/handoff.py``): ``virsh save`` -> ``zstd -3``
of the save image and of the qcow2 top layer, streamed over TCP to a tiny receiver inside
netns ``stk-b`` that pipes them into ``zstd -d`` -> ``virsh restore``.

``python bench/handoff_naive.py --naive-receiver HOST PORT DIR`` is the receiver itself (run by
the bench inside ``stk-b``, by path: it needs the standard library only and exits before the
other imports).
"""

import os
import socket
import struct
import subprocess
import sys
import time


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

import libvirt  # noqa: E402

from bench.handoff_measure import DomainWatch, link_bytes, start_heartbeat, switch_figures, \
    timeline  # noqa: E402
from bench.handoff_procs import finish, netns_argv, stderr_tail  # noqa: E402
from bench.run import BenchError, check_state  # noqa: E402
from cloudlet_compute.host import domxml  # noqa: E402
from stack import topology  # noqa: E402
from stack.guest import guest  # noqa: E402
from stack.story import OBSERVE, make_dir, parse_observation  # noqa: E402


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
    receiver = procs.start(netns_argv([sys.executable, os.path.abspath(__file__),
                                       "--naive-receiver", topology.LINK_NS_IP, "0", recv_dir]))
    ready = receiver.stdout.readline().split()
    if ready[:1] != ["listening"]:
        raise BenchError("naive receiver did not start: %s" % stderr_tail(receiver))
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
    finish(receiver, "naive receiver", 60)
    recv_image = os.path.join(recv_dir, "save.img")
    xml = domxml.for_instance(conn.saveImageGetXMLDesc(recv_image, 0), name,
                              os.path.join(recv_dir, "disk.qcow2"), recv_dir, base_id, dom_uuid)
    watch.dst = name   # the same name again: from now on, watch for it running
    conn.restoreFlags(recv_image, xml, libvirt.VIR_DOMAIN_SAVE_RUNNING)   # virsh restore
    t_restored = time.monotonic()
    gap, on_wire = switch_figures(hb, "naive-src", "naive-dst", t_from, bytes0, watch, flows,
                                  background)
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
    out.update(on_wire)
    out["timeline_s"] = timeline(t0, gap, watch, saved=t_saved, received=t_sent,
                                  restored=t_restored)
    return out
