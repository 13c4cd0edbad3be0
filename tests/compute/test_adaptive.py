"""Handoff compression per batch (handoff/adaptive.py): the chooser on injected measurements
(no clock involved), forcing a codec, the sender pipeline, and a round trip through the
receiver's decoding over a real loopback channel. No libvirt."""

import hashlib
import os
import random
import threading

import pytest

from cloudlet_compute.cli import build_parser
from cloudlet_compute.errors import CloudletError, FetchError
from cloudlet_compute.format import blobcodec
from cloudlet_compute.format.records import CHUNK_SIZE, TARGET_DISK
from cloudlet_compute.handoff import adaptive, destination, source, wire
from cloudlet_compute.nova import conf
from tests.compute.test_handoff import channels  # noqa: F401 (fixture)

NONE, Z1, Z3, Z9, Z15, Z19 = adaptive.LADDER
XZ6 = (blobcodec.XZ, 6)
# Speeds (input B/s) and ratios like the ones measured on this host on text-like pages.
PROFILE = {NONE: (2e9, 1.0), Z1: (180e6, 0.58), Z3: (170e6, 0.54), Z9: (40e6, 0.535),
           Z15: (6.5e6, 0.515), Z19: (3.5e6, 0.50),
           XZ6: (2.9e6, 0.51)}
BATCH = 512 << 10


def simulate(chooser, rate, frames, profile=PROFILE, ref=0.6):
    """Feed ``chooser`` the measurements a link of ``rate`` B/s and ``profile`` would give
    on batches of sample ratio ``ref``; return the candidates it chose, in order."""
    chosen = []
    for _ in range(frames):
        candidate, _why = chooser.choose(ref)
        speed, ratio = profile[candidate]
        out = int(BATCH * ratio)
        chooser.compressed(candidate, BATCH, out, BATCH / speed, ref=ref)
        chooser.sent(out, out / rate)
        chosen.append(candidate)
    return chosen


def settled(chosen, last=30):
    """The candidate chosen most often over the last frames, and how often."""
    tail = chosen[-last:]
    best = max(set(tail), key=tail.count)
    return best, tail.count(best) / len(tail)


def test_slow_link_gets_the_highest_level():
    best, share = settled(simulate(adaptive.Chooser(), 5e6 / 8, 60))
    assert best == Z19 and share >= 0.8


def test_fast_link_gets_no_compression():
    best, share = settled(simulate(adaptive.Chooser(), 1e9, 60))
    assert best == NONE and share >= 0.8


def test_random_batches_are_sent_as_they_are_on_a_slow_link():
    chosen = simulate(adaptive.Chooser(), 5e6 / 8, 30, ref=0.995)
    assert chosen == [NONE] * 30


def test_middle_rate_gets_a_middle_level():
    # 100 Mbit/s: zstd 19 cannot keep up (3.5 MB/s), none sends twice the bytes.
    assert settled(simulate(adaptive.Chooser(), 100e6 / 8, 60))[0] in (Z3, Z9)


def test_sequential_model_adds_compression_to_sending():
    # At 5 Mbit/s, zstd 19 costs 0.29 + 0.80 us per byte in sequence, zstd 3 0.006 + 0.86:
    # only when compression overlaps sending does zstd 19 win.
    chooser = adaptive.Chooser(pipelined=False)
    assert settled(simulate(chooser, 5e6 / 8, 60))[0] == Z3
    assert chooser.cost(Z3) < chooser.cost(Z9)
    assert chooser.cost(Z15) is None   # never tried: its neighbour zstd 9 never won


def test_link_getting_faster_moves_the_choice_down():
    chooser = adaptive.Chooser()
    simulate(chooser, 5e6 / 8, 40)
    assert chooser.ladder[chooser.best[1]] == Z19
    assert settled(simulate(chooser, 1e9, 40), last=20)[0] == NONE


def test_a_loaded_cpu_moves_the_choice_down():
    # The same 10 Mbit/s link; zstd at a tenth of its speed (other work on the cores).
    slow_cpu = {c: (s / 10, r) for c, (s, r) in PROFILE.items()}
    assert settled(simulate(adaptive.Chooser(), 10e6 / 8, 60))[0] == Z19
    assert settled(simulate(adaptive.Chooser(), 10e6 / 8, 60, slow_cpu))[0] in (Z3, Z9)


def test_neighbours_are_explored_but_rarely():
    chooser = adaptive.Chooser()
    chosen = simulate(chooser, 1e9, 120)
    tail = chosen[-60:]
    assert tail.count(NONE) >= 60 * (1 - 1.5 / adaptive.EXPLORE_EVERY)
    assert Z1 in tail   # the neighbour is still measured now and then
    assert set(tail) <= {NONE, Z1}


def test_incompressible_batches_are_not_compressed():
    chooser = adaptive.Chooser()
    simulate(chooser, 5e6 / 8, 40)            # learnt on text-like batches: zstd 19
    assert chooser.choose(0.999) == (NONE, "incompressible")
    assert chooser.choose(0.6)[0] in (Z15, Z19)


def test_content_classes_have_their_own_estimates():
    # Text compresses to 0.25 but slowly at zstd 19; mixed batches to 0.7 at 3x the speed.
    mixed = {c: (s * 3, min(1.0, r * 1.3)) for c, (s, r) in PROFILE.items()}
    chooser = adaptive.Chooser()
    simulate(chooser, 5e6 / 8, 30, ref=0.3)
    simulate(chooser, 5e6 / 8, 30, mixed, ref=0.7)
    text, mix = chooser.estimates[0, Z19], chooser.estimates[1, Z19]
    assert text.ratio == 0.5 and mix.ratio == pytest.approx(0.65, abs=1e-5)
    assert mix.speed == pytest.approx(3 * text.speed)


def test_sample_ratio_reads_compressibility():
    rng = random.Random(3)
    assert adaptive.sample_ratio(rng.randbytes(BATCH)) > 0.99
    assert adaptive.sample_ratio(b"the quick brown fox " * 30000) < 0.05
    assert 0 < adaptive.sample_ratio(b"tiny") <= 10


def test_figures_and_histogram():
    chooser = adaptive.Chooser()
    simulate(chooser, 5e6 / 8, 20)
    figures = chooser.figures()
    assert figures["send_rate_MBps"] == pytest.approx(0.625, rel=0.01)
    assert figures["zstd-19/mixed"]["ratio"] == 0.5 and figures["zstd-19/mixed"]["MBps"] == 3.5
    assert sum(chooser.histogram.values()) == 20


# --- forcing a codec --------------------------------------------------------------------
@pytest.mark.parametrize("text,forced", [("auto", None), ("zstd-3", Z3), ("XZ-6", XZ6),
                                         ("none", NONE), ("zstd-22", (blobcodec.ZSTD, 22))])
def test_parse(text, forced):
    assert adaptive.parse(text) == forced


@pytest.mark.parametrize("text", ["", "zstd", "zstd-0", "zstd-23", "xz-10", "none-1", "lz4-1",
                                  "zstd-²", "zstd--3"])
def test_parse_refuses_with_one_line(text):
    with pytest.raises(CloudletError) as caught:
        adaptive.parse(text)
    assert "\n" not in str(caught.value) and "auto" in str(caught.value)


def test_forced_codec_is_used_for_every_batch():
    chooser = adaptive.chooser("xz-6")
    assert [c for c in simulate(chooser, 5e6 / 8, 10)] == [XZ6] * 10
    assert chooser.forced and adaptive.chooser(blobcodec.ZSTD).ladder == [Z3]
    assert not adaptive.chooser().forced


def test_nova_option_and_cli_offer_the_same_choices(capsys):
    opt = {o.name: o for o in conf.cloudlet_opts}["handoff_compression"]
    assert opt.default == "auto"
    assert tuple(c for c, _ in opt.type.choices.items()) == adaptive.CHOICES
    args = build_parser().parse_args(["handoff", "send", "vm", "--listen", "h",
                                      "--compression", "zstd-19"])
    assert args.compression == "zstd-19"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["handoff", "send", "vm", "--listen", "h",
                                   "--compression", "zstd-99"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--compression" in err and "zstd-N (1-22)" in err


# --- the pipeline ------------------------------------------------------------------------
class FakeChannel:
    """Records frames; ``gate`` (an Event) holds each send until set; ``fail_at``: the
    frame number whose send raises."""

    def __init__(self, gate=None, fail_at=None):
        self.frames, self.gate, self.fail_at = [], gate, fail_at
        self.sending = threading.Event()

    def send(self, kind, payload):
        self.sending.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if len(self.frames) == self.fail_at:
            raise FetchError("handoff connection to fake lost while sending: reset")
        self.frames.append((kind, bytes(payload)))


@pytest.mark.parametrize("pipelined", [True, False])
def test_pipeline_keeps_the_order_of_frames(pipelined):
    channel = FakeChannel()
    sender = adaptive.FrameSender(channel, adaptive.Chooser(), pipelined)
    expected = []
    for n in range(40):
        plain = (b"records %d " % n) * (n * 50 + 1)
        sender.records(wire.RECORDS, plain)
        expected.append((wire.RECORDS, plain))
        if n % 7 == 0:
            sender.frame(wire.TAIL, b"raw %d" % n)
            expected.append((wire.TAIL, b"raw %d" % n))
    stats = sender.finish()
    got = [(k, blobcodec.decompress(p, 1 << 20) if k == wire.RECORDS else p)
           for k, p in channel.frames]
    assert got == expected
    assert stats["record_frames"] == 40 and sum(stats["choices"].values()) == 40
    assert stats["pipelined"] is pipelined


def test_pipeline_holds_at_most_two_batches():
    gate = threading.Event()
    channel = FakeChannel(gate)
    sender = adaptive.FrameSender(channel, adaptive.Chooser())
    sender.frame(wire.RECORDS, b"1")     # taken by the sender thread, held at the gate
    assert channel.sending.wait(5)
    sender.frame(wire.RECORDS, b"2")     # waits in the queue
    third = threading.Thread(target=sender.frame, args=(wire.RECORDS, b"3"))
    third.start()
    third.join(0.3)
    assert third.is_alive(), "a third frame was accepted while two were in flight"
    gate.set()
    third.join(5)
    sender.finish()
    assert [p for _, p in channel.frames] == [b"1", b"2", b"3"]


@pytest.mark.parametrize("pipelined", [True, False])
def test_pipeline_raises_a_send_error_and_sends_nothing_after(pipelined):
    channel = FakeChannel(fail_at=2)
    sender = adaptive.FrameSender(channel, adaptive.Chooser(), pipelined)
    with pytest.raises(FetchError, match="lost while sending"):
        for n in range(50):
            sender.records(wire.RECORDS, b"x" * 1000)
        sender.finish()
    assert len(channel.frames) == 2
    with pytest.raises(FetchError):
        sender.finish()


def test_abort_drops_what_is_queued():
    gate = threading.Event()
    channel = FakeChannel(gate)
    sender = adaptive.FrameSender(channel, adaptive.Chooser())
    sender.frame(wire.RECORDS, b"1")
    assert channel.sending.wait(5)
    sender.frame(wire.RECORDS, b"2")
    threading.Timer(0.2, gate.set).start()
    sender.abort(wait=5)
    assert not sender._thread.is_alive() and [p for _, p in channel.frames] == [b"1"]


# --- round trip through the receiver's decoding -----------------------------------------
class FakeBase:
    """A base VM with nothing in it (no page or chunk is found there)."""

    disk_digests_path = os.devnull

    def __init__(self, chunks):
        self.disk_size = chunks * CHUNK_SIZE

    def memory_pages(self):
        return [], [], [], b""

    def disk_digests(self):
        return b""


def _chunks(count, seed=7):
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnop", k=rng.randint(2, 9))) for _ in range(300)]
    out = {}
    for i in range(count):
        kind = i % 5
        if kind == 0:
            out[i] = rng.randbytes(CHUNK_SIZE)
        elif kind == 1:
            out[i] = None
        elif kind == 2 and i > 10:
            out[i] = out[i - 10 + (i % 3)] or bytes(CHUNK_SIZE)   # repeats: self/prior refs
        else:
            out[i] = (b" ".join(rng.choices(words, k=900)) + b"%d" % i)[:CHUNK_SIZE].ljust(
                CHUNK_SIZE, b".")
    return out


@pytest.mark.parametrize("codec", ["auto", "xz-6", "none"])
def test_round_trip_through_the_receivers_decoding(channels, codec):  # noqa: F811
    src, dest = channels
    chunks = _chunks(1500)
    base = FakeBase(len(chunks))
    state = destination._Reassembly(base, b"", None)

    def receive():
        for frame, kind, data in destination.frames(dest):
            if kind == wire.RECORDS:
                state.take_records(data, frame)

    receiver = threading.Thread(target=receive)
    receiver.start()
    encoder = source._Encoder(src, base, adaptive.chooser(codec))
    for i, data in chunks.items():
        encoder.add(TARGET_DISK, i, data)
    encoder.flush()
    encoder.frame(wire.END, b"")
    stats = encoder.finish()
    receiver.join(20)
    assert not receiver.is_alive()
    assert {i: hashlib.sha256(d).digest() for i, d in state.disk.items()} == {
        i: hashlib.sha256(d or bytes(CHUNK_SIZE)).digest() for i, d in chunks.items()}
    assert stats["record_frames"] >= 2 and sum(stats["choices"].values()) == stats["record_frames"]
    if codec != "auto":
        assert stats["choices"] == {codec: stats["record_frames"]}
