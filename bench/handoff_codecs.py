"""Handoff compression, engine only (no VM): adaptive against fixed zstd-3 on shaped links.

A synthetic stream of 4 KiB guest pages goes through the handoff encoder
(``source._Encoder``: dedup, records, compression, ``handoff.adaptive``) and the real
authenticated channel (``handoff.wire``) over a loopback TCP connection to a receiver
process that reads at a shaped rate (token bucket, 64 KiB burst) and decodes every frame as
the destination does (``blobcodec.decompress`` + ``records.iter_records``; it checks the
record count). Both socket buffers are set to 128 KiB so that the kernel does not hide a
slow link behind megabytes of buffer (a 25 Mbit/s x 40 ms path holds 125 KB).

Pages come in runs of 16-256 of one kind (memory has regions): 40 % zero, 25 % random,
35 % text-like (Zipf-distributed words; zstd-3 makes them ~0.27 of their size). Every
non-zero page is unique (stamped with its number), so dedup finds only the zeros.

Modes, each run in its own process (peak RSS is the sender's, ``ru_maxrss``):

* ``sequential``: zstd-3, compression and sending in one thread (the engine before
  ``handoff.adaptive``);
* ``zstd-3``: zstd-3 forced, compression of batch N+1 overlapping the sending of batch N;
* ``auto``: the same pipeline, codec and level per batch from the measured rates.

``total_s`` runs from the first page to the receiver having decoded END (one clock: Linux's
CLOCK_MONOTONIC is system-wide). Wire bytes are the channel's (frame heads, GCM tags), not
IP. The default run (< 2 min) scales the stream per rate so that each case takes a few
seconds; ``--full`` sends 200 MiB at every rate (about 10 minutes, most of it at 5 Mbit/s).

``.venv/bin/python -m bench.handoff_codecs [--full] [--mix zero=40,random=5,text=55]
[--rates 5,unlimited]``; JSON on stdout (also in
``.state/bench/handoff_codecs.json``), a table on stderr.
"""

import argparse
import itertools
import json
import multiprocessing
import os
import random
import resource
import socket
import subprocess
import sys
import time

from bench import human, log, publish
from cloudlet_compute.format import blobcodec, records
from cloudlet_compute.format.records import CHUNK_SIZE, TARGET_MEMORY
from cloudlet_compute.handoff import adaptive, destination, source, wire

RATES = [("5 Mbit/s", 5e6), ("25 Mbit/s", 25e6), ("100 Mbit/s", 100e6), ("unlimited", None)]
SHORT_MIB = {"5 Mbit/s": 16, "25 Mbit/s": 64, "100 Mbit/s": 128, "unlimited": 200}
FULL_MIB = 200
MODES = ["sequential", "zstd-3", "auto"]
BUFFER = 128 << 10
BURST = 64 << 10
DEST_UUID = "00000000-0000-4000-8000-00000000beef"
MIX = (("zero", 0.40), ("random", 0.25), ("text", 0.35))


class EmptyBase:
    """A base VM holding nothing: only zero pages are found without sending them."""

    disk_size = 0
    disk_digests_path = os.devnull

    def memory_pages(self):
        return [], [], [], b""

    def disk_digests(self):
        return b""


def parse_mix(text):
    """``zero=40,random=25,text=35`` -> ((kind, share), ...)."""
    try:
        mix = tuple((k, float(v)) for k, v in (p.split("=") for p in text.split(",")))
    except ValueError:
        mix = ()
    if not mix or any(k not in dict(MIX) for k, _ in mix):
        raise argparse.ArgumentTypeError("--mix is KIND=SHARE,... with kinds zero, random, text")
    return mix


def pages(mib, mix=MIX, seed=19):
    """``(index, bytes or None)`` for ``mib`` MiB of pages, deterministic for ``seed``."""
    rng = random.Random(seed)
    vocab = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 12)))
             for _ in range(3000)]
    weights = list(itertools.accumulate(1 / (i + 1) for i in range(len(vocab))))
    corpus = b" ".join(rng.choices(vocab, cum_weights=weights, k=400_000))
    kinds, shares = zip(*mix)
    index, total = 0, (mib << 20) // CHUNK_SIZE
    while index < total:
        kind = rng.choices(kinds, shares)[0]
        for _ in range(min(rng.randint(16, 256), total - index)):
            if kind == "zero":
                data = None
            elif kind == "random":
                data = rng.randbytes(CHUNK_SIZE)
            else:
                at = rng.randrange(len(corpus) - CHUNK_SIZE)
                data = index.to_bytes(8, "big") + corpus[at + 8:at + CHUNK_SIZE]
            yield index, data
            index += 1


class Shaped:
    """A socket's ``recv`` at ``rate`` bytes/s (token bucket of ``BURST`` bytes)."""

    def __init__(self, sock, rate):
        self.sock, self.rate = sock, rate
        self.tokens, self.last = float(BURST), time.monotonic()

    def recv(self, n):
        want = min(n, BURST)
        while True:
            now = time.monotonic()
            self.tokens = min(BURST, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= want:
                break
            time.sleep((want - self.tokens) / self.rate)
        data = self.sock.recv(want)
        self.tokens -= len(data)
        return data

    def settimeout(self, t):
        self.sock.settimeout(t)

    def close(self):
        self.sock.close()


def receiver(url, secret, rate, out):
    """The destination: connect, read at ``rate`` bit/s, decode; report to pipe ``out``."""
    host, port = wire._split_url(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    sock.settimeout(60)
    sock.connect((host, port))
    channel = wire._greet_source(sock, url, DEST_UUID, secret, time.monotonic() + 30)
    if rate:
        channel.sock = Shaped(channel.sock, rate / 8)
    count = 0
    while True:
        kind, payload = channel.receive()
        if kind == wire.END:
            break
        plain = blobcodec.decompress(payload, destination.MAX_PLAIN)
        count += sum(1 for _ in records.iter_records(plain))
    out.send({"end_at": time.monotonic(), "records": count,
              "bytes_received": channel.bytes_received})
    channel.close()


def run_one(mode, rate, mib, mix=MIX):
    """One case in this process; returns its figures."""
    listener = wire.Listener("127.0.0.1", timeout=60)
    mine, theirs = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(
        target=receiver, args=(listener.url, listener.secret, rate, theirs), daemon=True)
    proc.start()
    channel = listener.accept(DEST_UUID, 30)
    channel.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    encoder = source._Encoder(channel, EmptyBase(), adaptive.chooser(
        "zstd-3" if mode == "sequential" else mode, pipelined=mode != "sequential"))
    stream = pages(mib, mix)
    sent = 0
    t0, c0 = time.monotonic(), time.process_time()
    for index, data in stream:
        encoder.add(TARGET_MEMORY, index, data)
        sent += 1
    encoder.flush()
    encoder.frame(wire.END, b"")
    stats = encoder.finish()
    sender_done = time.monotonic()
    got = mine.recv()
    proc.join(10)
    if got["records"] != sent:
        raise AssertionError("the receiver decoded %d records of %d" % (got["records"], sent))
    return {"mode": mode, "rate_bps": rate, "input_bytes": mib << 20,
            "total_s": round(got["end_at"] - t0, 3),
            "sender_s": round(sender_done - t0, 3),
            "sender_cpu_s": round(time.process_time() - c0, 3),
            "bytes_sent": channel.bytes_sent,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "compression": stats}


def run_case(mode, rate, mib, mix):
    """``run_one`` in a fresh interpreter (its own peak RSS)."""
    mix_text = ",".join("%s=%g" % kv for kv in mix)
    out = subprocess.run([sys.executable, "-m", "bench.handoff_codecs", "--one", mode,
                          str(rate or 0), str(mib), "--mix", mix_text], capture_output=True,
                         text=True,
                         check=False, timeout=900)
    if out.returncode:
        raise RuntimeError("case %s at %s failed:\n%s" % (mode, rate, out.stderr[-3000:]))
    return json.loads(out.stdout)


def table(doc):
    lines = ["%-11s %8s %-10s %8s %11s %7s %8s  %s" % (
        "link", "input", "mode", "total s", "sent", "ratio", "RSS MiB", "auto vs zstd-3 / choices")]
    for link in doc["links"]:
        rows = {r["mode"]: r for r in link["runs"]}
        for mode in MODES:
            r = rows[mode]
            note = ""
            if mode == "auto":
                note = "time %.2fx bytes %.2fx | %s" % (
                    link["auto_over_zstd3_time"], link["auto_over_zstd3_bytes"],
                    " ".join("%s:%d" % kv for kv in sorted(r["compression"]["choices"].items())))
            lines.append("%-11s %8s %-10s %8.2f %11s %7.3f %8.1f  %s" % (
                link["link"], human(r["input_bytes"]), mode, r["total_s"], human(r["bytes_sent"]),
                r["bytes_sent"] / r["input_bytes"], r["peak_rss_mib"], note))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="%d MiB at every rate" % FULL_MIB)
    parser.add_argument("--mix", type=parse_mix, default=MIX,
                        help="page kinds and shares (default %s)"
                        % ",".join("%s=%g" % kv for kv in MIX))
    parser.add_argument("--rates", help="only these links, e.g. 5,unlimited (Mbit/s)")
    parser.add_argument("--one", nargs=3, metavar=("MODE", "RATE", "MIB"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        mode, rate, mib = args.one
        print(json.dumps(run_one(mode, float(rate) or None, int(mib), args.mix)))
        return 0
    rates = RATES
    if args.rates:
        wanted = set(args.rates.split(","))
        rates = [(n, r) for n, r in RATES if n.split()[0] in wanted]
    t0 = time.monotonic()
    doc = {"bench": "handoff_codecs", "cpus": os.cpu_count(), "load_before": os.getloadavg(),
           "mix": dict(args.mix), "links": []}
    for link, rate in rates:
        mib = FULL_MIB if args.full else SHORT_MIB[link]
        runs = []
        for mode in MODES:
            log("%s, %d MiB, %s", link, mib, mode)
            runs.append(run_case(mode, rate, mib, args.mix))
        rows = {r["mode"]: r for r in runs}
        doc["links"].append({
            "link": link, "rate_bps": rate, "runs": runs,
            "auto_over_zstd3_time": round(rows["auto"]["total_s"] / rows["zstd-3"]["total_s"], 3),
            "auto_over_zstd3_bytes": round(rows["auto"]["bytes_sent"] / rows["zstd-3"]["bytes_sent"],
                                           3),
            "pipelined_over_sequential_time": round(
                rows["zstd-3"]["total_s"] / rows["sequential"]["total_s"], 3)})
    doc["load_after"] = os.getloadavg()
    doc["bench_wall_s"] = round(time.monotonic() - t0, 1)
    publish("handoff_codecs.json", doc, table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
