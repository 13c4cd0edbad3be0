"""Benchmarks of the overlay engine (``make bench``): see ``bench/README.md``.

``bench/run.py`` runs the demo workload once and measures overlay size against the naive
and whole-VM baselines, overlay creation, and synthesis against a plain ``virsh restore``;
``bench/codec_choice.py`` compares blob codecs and levels on one captured overlay;
``bench/overlay_memory.py`` measures overlay creation's peak memory without a VM, on the
big synthetic VMs of ``bench/bigvm.py`` (made by ``bench/synthetic.py``, which the format
tests and the fuzzers also use).
"""

import json
import os
import statistics
import sys
import time

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE_DIR = os.path.join(REPO_DIR, ".state", "bench")

_T0 = time.monotonic()


def log(msg, *args):
    """One progress line on stderr, with the seconds since the bench started."""
    text = msg % args if args else msg
    print("bench [%6.1f s] %s" % (time.monotonic() - _T0, text), file=sys.stderr, flush=True)


def median(values):
    return statistics.median(values) if values else None


def state_dir():
    """``.state/bench``, created searchable by the QEMU user."""
    os.makedirs(STATE_DIR, exist_ok=True)
    os.chmod(STATE_DIR, 0o755)
    return STATE_DIR


def save_json(name, doc):
    """Write ``doc`` to ``.state/bench/NAME`` (atomically); return the path."""
    path = os.path.join(state_dir(), name)
    with open(path + ".part", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(path + ".part", path)
    return path


def publish(name, doc, table):
    """Save ``doc`` as ``.state/bench/NAME``, print it as JSON on stdout and ``table`` (its
    human form) between two rules on stderr."""
    path = save_json(name, doc)
    print(json.dumps(doc, indent=1), flush=True)
    print("\n" + "=" * 100 + "\n" + table + "\n" + "=" * 100, file=sys.stderr)
    log("saved %s (%.0f s)", path, doc["bench_wall_s"])


def human(n):
    """Bytes as a short human string."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return "%d %s" % (n, unit) if unit == "B" else "%.2f %s" % (n, unit)
        n /= 1024.0
    return str(n)
