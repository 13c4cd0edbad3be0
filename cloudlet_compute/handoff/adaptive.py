"""Handoff compression chosen per frame from what the link and the CPU are measured to do.

``Chooser`` keeps moving estimates of the channel's send rate (bytes on the wire per second,
measured around ``channel.send``: on a TCP socket, what left the kernel's send buffer
(``TIOCOUTQ``) while it was never empty, so that the buffer does not hide a slow link;
elsewhere the time of the send) and, per candidate codec/level, of its compression speed
(input bytes per second of wall time in the compressing thread, so the other load on the
cores counts) and ratio. For the next batch it picks the candidate with the least estimated
time per input byte::

    pipelined:   max(produce + compress, ratio / rate)
    sequential:  produce + compress + ratio / rate

``produce`` is the encoder's own work per input byte (dedup, records), the same for every
candidate. ``FrameSender`` is pipelined: the encoder's thread compresses batch N+1 while a
sender thread puts batch N on the wire (zstd and ``sendall`` release the GIL), so the max()
is what the engine pays; ``pipelined=False`` is the old sequential path (used by the bench).

Candidates (``LADDER``), from the cheapest: none, zstd 1, 3, 9, 15, 19. Measured on this
host (2 loaded cores) on 512 KiB batches of text-like pages: zstd 1/3 at 120-180 MB/s,
zstd 9 at 30-40 MB/s for 2-3 % less output, zstd 15 at ~6.5 MB/s for 5 % less again, zstd
19 at 2-3.5 MB/s for 4 % less again: each rung costs 3-5x the CPU of the one below, so
every rung wins on some link from ~5 Mbit/s (zstd 19) to ~1 Gbit/s (none). Levels between
(6, 12, 17) were within 1-2 % of a neighbour in both. xz -6 came within 0.5 % of zstd 19
at the same speed and decodes ~10x slower at the destination, so it is not a rung; it can
still be forced (``xz-6``).

Each batch's compressibility is read first on a 32 KiB sample (``sample_ratio``, zstd 1),
which puts it in one of three content classes (text-like, mixed, random); speed and ratio
are estimated per class (both move 3-10x between text and random pages; the ratio relative
to the sample's, so that it predicts the ratio of a new batch), random batches go
out as they are, the others get the level the link pays for. Search: hill-climbing on the
ladder, per class. A neighbour of the best rung not yet measured is tried next; afterwards
one frame in ``explore_every`` goes to a neighbour so that the estimates stay fresh when
the content or the link changes; a neighbour estimated at more than 1.5x the best's cost
is tried 8x less often, so that a fast link does not pay for zstd 19 every 6 frames.
"""

import collections
import fcntl
import logging
import queue
import socket
import struct
import termios
import threading
import time

import zstandard

from cloudlet_compute.errors import ConflictError
from cloudlet_compute.format import blobcodec
from cloudlet_compute.handoff import wire

LOG = logging.getLogger(__name__)

AUTO = "auto"
LADDER = ((blobcodec.NONE, 0), (blobcodec.ZSTD, 1), (blobcodec.ZSTD, 3), (blobcodec.ZSTD, 9),
          (blobcodec.ZSTD, 15), (blobcodec.ZSTD, 19))
START = (blobcodec.ZSTD, 3)       # the engine's default before anything is measured
LEVELS = {blobcodec.NONE: range(0, 1), blobcodec.ZSTD: range(1, 23), blobcodec.XZ: range(0, 10)}
EXPLORE_EVERY = 6
ALPHA = 0.3                        # weight of the newest measurement in a moving estimate
RATE_WINDOW = 8                    # frames over which the send rate is measured
LOG_EVERY = 64                     # record frames between two INFO lines
SAMPLE, SAMPLES = 2 << 10, 16
CLASSES = (0.45, 0.98)             # sample ratios between content classes (content_class)
CLASS_NAMES = ("text", "mixed", "random")
NONE = (blobcodec.NONE, 0)
NONE_SPEED = 2e9                   # "compressing" with none: one copy (B/s)
_SAMPLER = zstandard.ZstdCompressor(level=1)


def name(candidate):
    """``zstd-3``, ``xz-6``, ``none``."""
    codec, level = candidate
    return "none" if codec == blobcodec.NONE else "%s-%d" % (blobcodec.NAMES[codec], level)


# What the [cloudlet] option and the CLI offer: auto, the ladder and xz-6.
CHOICES = (AUTO,) + tuple(name(c) for c in LADDER) + ("xz-6",)


def parse(text):
    """``None`` for ``auto``, else the ``(codec id, level)`` that ``text`` forces (``none``,
    ``zstd-N`` with N in 1..22, ``xz-N`` with N in 0..9); ``ConflictError`` otherwise."""
    text = str(text).strip().lower()
    if text == AUTO:
        return None
    codec_name, _, level = text.partition("-")
    codec = blobcodec.IDS.get(codec_name)
    if codec == blobcodec.NONE and not level:
        return (codec, 0)
    if codec is not None and codec != blobcodec.NONE and level.isascii() and level.isdigit() \
            and int(level) in LEVELS[codec]:
        return (codec, int(level))
    raise ConflictError("handoff compression %r is not auto, none, zstd-N (1-22) or xz-N (0-9)"
                        % text)


def _ewma(old, new):
    return new if old is None else old + ALPHA * (new - old)


def sample_ratio(plain):
    """What zstd 1 makes of a sample of ``plain`` (16 slices of 2 KiB spread over it): a
    cheap reading of the batch's compressibility (~1/16 of compressing it at zstd 1)."""
    if len(plain) > SAMPLES * SAMPLE:
        step = (len(plain) - SAMPLE) // (SAMPLES - 1)
        plain = b"".join(plain[i * step:i * step + SAMPLE] for i in range(SAMPLES))
    return len(_SAMPLER.compress(plain)) / max(len(plain), 1)


def content_class(ref):
    """0: compressible (text, code), 1: mixed (or not sampled), 2: incompressible, from a
    batch's ``sample_ratio``."""
    if ref is None:
        return 1
    return 0 if ref < CLASSES[0] else 1 if ref < CLASSES[1] else 2


def chooser(codec=AUTO, level=None, pipelined=True):
    """The ``Chooser`` for ``codec``: ``auto`` (the ladder), a forced name (``zstd-3``,
    ``xz-6``, ``none``: ``parse``) or a ``blobcodec`` id with ``level``."""
    if isinstance(codec, int):
        forced = (codec, blobcodec.DEFAULT_LEVELS[codec] if level is None else level)
    else:
        forced = parse(codec)
    if forced is None:
        return Chooser(pipelined=pipelined)
    return Chooser(ladder=[forced], start=forced, pipelined=pipelined)


class _Estimate:
    """Moving estimate of one candidate on one content class: compression speed (input
    B/s) and ratio, the latter relative to the batches' sample ratios (``rel``) so that
    batches of the same class but other compressibility do not blur it."""

    def __init__(self, speed=None, ratio=None):
        self.speed, self.ratio, self.rel = speed, ratio, ratio
        self.frames = 0 if speed is None else 1

    def add(self, plain, out, seconds, ref=None):
        self.speed = _ewma(self.speed, plain / max(seconds, 1e-7))
        ratio = out / max(plain, 1)
        self.ratio = _ewma(self.ratio, ratio)
        self.rel = _ewma(self.rel, ratio / (ref or 1.0))
        self.frames += 1

    def predict(self, ref=None):
        """The ratio expected on a batch of sample ratio ``ref``."""
        return min(1.0, self.rel * (ref or 1.0))


class _Uncompressed(_Estimate):
    """``none``: known without measuring it."""

    def __init__(self):
        super().__init__(NONE_SPEED, 1.0)

    def predict(self, ref=None):
        return 1.0


class Chooser:
    """Picks the codec/level of each batch; fed with measurements (thread-safe).

    Speed and ratio are kept per content class (``content_class``): both move by 3-10x
    between text and random pages, and a batch's class is known before it is compressed.
    Incompressible batches go out with ``none`` when it is a candidate.
    """

    def __init__(self, ladder=LADDER, start=START, pipelined=True, explore_every=EXPLORE_EVERY):
        self.ladder = list(ladder)
        self.pipelined, self.explore_every = pipelined, explore_every
        self.estimates = {(k, c): _Estimate() for k in range(3) for c in self.ladder}
        if NONE in self.ladder:   # known without measuring it
            for k in range(3):
                self.estimates[k, NONE] = _Uncompressed()
        first = self.ladder.index(start) if start in self.ladder else 0
        self.best = [first] * 3
        self.produce = 0.0               # moving s per input byte of the encoder's own work
        self._sends = collections.deque(maxlen=RATE_WINDOW)
        self._choices = self._explored = 0
        self._lock = threading.Lock()
        self.histogram = collections.Counter()

    @property
    def forced(self):
        return len(self.ladder) == 1

    # --- measurements
    def compressed(self, candidate, plain, out, seconds, produce_seconds=0.0, ref=None):
        """``candidate`` turned ``plain`` bytes into ``out`` in ``seconds``; producing the
        plain bytes took the encoder ``produce_seconds``; ``ref``: the batch's
        ``sample_ratio``."""
        with self._lock:
            self.estimates[content_class(ref), candidate].add(plain, out, seconds, ref)
            per_byte = produce_seconds / max(plain, 1)
            self.produce += ALPHA * (per_byte - self.produce)

    def sent(self, wire_bytes, seconds):
        """The link took ``wire_bytes`` in ``seconds``."""
        if seconds > 0:
            with self._lock:
                self._sends.append((max(wire_bytes, 0), seconds))

    @property
    def rate(self):
        """Send rate (B/s) over the last frames; ``None`` before the first one."""
        with self._lock:
            sends = list(self._sends)
        if not sends:
            return None
        return max(sum(b for b, _ in sends), 1) / max(sum(s for _, s in sends), 1e-7)

    # --- the model
    def cost(self, candidate, rate=None, ref=None):
        """Estimated seconds per input byte with ``candidate`` on a batch of sample ratio
        ``ref``; ``None`` if unmeasured."""
        est, rate = self.estimates[content_class(ref), candidate], rate or self.rate
        if not est.frames or rate is None:
            return None
        work, send = self.produce + 1.0 / est.speed, est.predict(ref) / rate
        return max(work, send) if self.pipelined else work + send

    def _neighbours(self, i):
        return [j for j in (i - 1, i + 1) if 0 <= j < len(self.ladder)]

    def choose(self, ref=None):
        """``(candidate, why)`` for the next batch (``ref``: its ``sample_ratio``); why is
        ``best``, ``explore``, ``incompressible`` or ``forced``."""
        with self._lock:
            self._choices += 1
        cls = content_class(ref)
        if self.forced:
            choice, why = self.ladder[0], "forced"
        elif cls == 2 and NONE in self.ladder:
            choice, why = NONE, "incompressible"
        else:
            rate = self.rate
            costs = {i: self.cost(c, rate, ref) for i, c in enumerate(self.ladder)}
            measured = [i for i, v in costs.items() if v is not None]
            if measured:
                self.best[cls] = min(measured, key=lambda i: (costs[i], i))
            best = self.best[cls]
            around = self._neighbours(best)
            fresh = [j for j in around if costs[j] is None]
            # A neighbour much dearer than the best is refreshed 8x less often.
            due = [j for j in around if costs[j] is not None and self._choices % (
                self.explore_every * (1 if costs[j] <= 1.5 * costs[best] else 8)) == 0]
            if rate is not None and fresh:
                pick, why = fresh[0], "explore"
            elif rate is not None and due:
                self._explored += 1
                pick, why = due[self._explored % len(due)], "explore"
            else:
                pick, why = best, "best"
            choice = self.ladder[pick]
        self.histogram[name(choice)] += 1
        return choice, why

    def figures(self):
        """The estimates, for logs and stats."""
        rate = self.rate
        out = {"send_rate_MBps": None if rate is None else round(rate / 1e6, 3),
               "produce_MBps": round(1e-6 / self.produce, 1) if self.produce else None}
        for (cls, c), est in self.estimates.items():
            if est.frames and not (c == NONE and est.frames == 1):
                cost = self.cost(c, rate, (0.0, 0.5, 1.0)[cls])
                out["%s/%s" % (name(c), CLASS_NAMES[cls])] = {
                    "MBps": round(est.speed / 1e6, 2), "ratio": round(est.ratio, 4),
                    "over_sample": round(est.rel, 4),
                    "frames": est.frames,
                    "s_per_MiB": None if cost is None else round(cost * (1 << 20), 4)}
        return out


def _queued(channel):
    """Bytes the kernel still holds for ``channel``'s socket (unsent or unacknowledged;
    Linux ``TIOCOUTQ``), or None where that cannot be read."""
    try:
        raw = fcntl.ioctl(channel.sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    except (AttributeError, OSError, ValueError):
        return None
    return struct.unpack("i", raw)[0]


class FrameSender:
    """Frames to ``channel`` in order; RECORDS batches compressed as the chooser says.

    Pipelined: one sender thread; ``queue`` holds at most one compressed frame besides the
    one being sent, so at most two batches are in flight (plus the one the encoder builds).
    An error of the sender thread is raised in the caller's thread by the next ``records``,
    ``frame`` or ``finish``; after it nothing more is sent.
    """

    def __init__(self, channel, chooser, pipelined=True, clock=time.perf_counter):
        self.channel, self.chooser, self.pipelined, self.clock = channel, chooser, pipelined, clock
        self.frames = 0
        self.plain_bytes = self.compressed_bytes = 0
        self.compress_s = self.send_s = self.wait_s = self.sample_s = 0.0
        self.error, self._aborting = None, False
        self._mark = None     # (time, bytes the link had taken) at the end of the last send
        self._t0 = clock()
        if pipelined:
            self._queue = queue.Queue(maxsize=1)
            self._thread = threading.Thread(target=self._run, name="handoff-sender", daemon=True)
            self._thread.start()

    # --- caller's side
    def records(self, kind, plain, produce_seconds=0.0):
        """Compress one batch of records and queue it."""
        self._raise()
        ref = None
        if not self.chooser.forced:
            t = self.clock()
            ref = sample_ratio(plain)
            self.sample_s += self.clock() - t
        candidate, why = self.chooser.choose(ref)
        t = self.clock()
        blob = blobcodec.compress(plain, *candidate)
        seconds = self.clock() - t
        self.chooser.compressed(candidate, len(plain), len(blob), seconds, produce_seconds, ref)
        self.frames += 1
        self.plain_bytes += len(plain)
        self.compressed_bytes += len(blob)
        self.compress_s += seconds
        if self.frames % LOG_EVERY == 0:
            LOG.info("handoff compression, frame %d: %s (%s); %s", self.frames, name(candidate),
                     why, self.chooser.figures())
        self.frame(kind, blob)

    def frame(self, kind, payload):
        """Queue one frame as it is."""
        self._raise()
        if not self.pipelined:
            self._send(kind, payload)
            self._raise()
            return
        t = self.clock()
        self._queue.put((kind, payload))
        self.wait_s += self.clock() - t

    def finish(self):
        """Wait until every queued frame is on the wire; stop the thread; raise its error."""
        if self.pipelined and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()
        return self.summary()

    def abort(self, wait=5.0):
        """Drop what is queued and stop the thread (the caller then ends the channel). A
        send blocked for more than ``wait`` s is broken by shutting the socket down."""
        self._aborting = True
        if not self.pipelined:
            return
        deadline = time.monotonic() + wait
        for attempt in range(2):
            while self._thread.is_alive() and time.monotonic() < deadline:
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if not self._thread.is_alive() or attempt:
                return
            try:
                self.channel.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            deadline = time.monotonic() + wait

    def summary(self):
        """Figures for the handoff's stats and the last log line."""
        return {"compression": "auto" if not self.chooser.forced else name(self.chooser.ladder[0]),
                "pipelined": self.pipelined, "record_frames": self.frames,
                "choices": dict(self.chooser.histogram),
                "plain_bytes": self.plain_bytes, "compressed_bytes": self.compressed_bytes,
                "compress_s": round(self.compress_s, 3), "sample_s": round(self.sample_s, 3),
                "send_s": round(self.send_s, 3),
                "wait_for_sender_s": round(self.wait_s, 3),
                "wall_s": round(self.clock() - self._t0, 3),
                "estimates": self.chooser.figures()}

    # --- sender's side
    def _raise(self):
        if self.error is not None:
            raise self.error

    def _send(self, kind, payload):
        if self._aborting or self.error is not None:
            return
        before = _queued(self.channel)
        t = self.clock()
        try:
            self.channel.send(kind, payload)
        except BaseException as exc:   # raised again in the caller's thread
            self.error = exc
            return
        now = self.clock()
        self.send_s += now - t
        after = _queued(self.channel)
        if before is None or after is None:   # not a TCP socket: the time of the send
            self.chooser.sent(len(payload) + wire.FRAME_HEAD.size + wire.TAG_SIZE, now - t)
            return
        # What left the socket's buffer, from the end of the previous send to now: the
        # link was busy all that time if the buffer still held bytes before this send.
        delivered = self.channel.bytes_sent - after
        if before > 0 and self._mark is not None:
            self.chooser.sent(delivered - self._mark[1], now - self._mark[0])
        self._mark = (now, delivered)

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._send(*item)
