"""Progress reporting: a bar on a terminal, nothing elsewhere (and a hook for callers)."""

import sys
import time


class Progress:
    """Reports how far one step (``label``) got, out of ``total`` units of ``unit``."""

    def __init__(self, label, total=None, unit="B", stream=None, callback=None):
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()
        self._callback = callback
        self._start = self._last = time.monotonic()

    def update(self, amount):
        """Count ``amount`` more units done."""
        self.done += amount
        if self._callback:
            self._callback(self.label, self.done, self.total)
        now = time.monotonic()
        if self._tty and now - self._last >= 0.1:
            self._last = now
            self._draw(now)

    def _fmt(self, value):
        if self.unit != "B":
            return "%d" % value
        for suffix in ("B", "KiB", "MiB", "GiB"):
            if value < 1024 or suffix == "GiB":
                return "%.1f %s" % (value, suffix) if suffix != "B" else "%d B" % value
            value /= 1024.0
        return str(value)

    def _draw(self, now):
        rate = self.done / max(now - self._start, 1e-6)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            text = "%-18s [%-30s] %3d%% %s/%s" % (self.label, bar, frac * 100,
                                                  self._fmt(self.done), self._fmt(self.total))
        else:
            text = "%-18s %s" % (self.label, self._fmt(self.done))
        if self.unit == "B":
            text += "  %s/s" % self._fmt(rate)
        self._stream.write("\r" + text[:100].ljust(100))
        self._stream.flush()

    def finish(self):
        """Close the bar (one final line on a terminal)."""
        if self._tty:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()


def percent_steps(report, step=5):
    """A ``fraction -> None`` that calls ``report(percent)`` each time the fraction done has
    grown by ``step`` percent, and at 100 (reports to a service, not a terminal)."""
    reported = [0]

    def seen(fraction):
        percent = min(int(fraction * 100), 100)
        if percent >= reported[0] + step or percent == 100 > reported[0]:
            reported[0] = percent
            report(percent)
    return seen


class NullProgress(Progress):
    """Progress that counts but never draws."""

    def __init__(self, label="", total=None, unit="B", callback=None):
        super().__init__(label, total, unit, callback=callback)
        self._tty = False
