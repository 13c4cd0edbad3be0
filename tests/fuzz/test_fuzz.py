"""The fuzz targets in ``make test``: every corpus file and every regression replayed
deterministically, then each target fuzzed for a few seconds (coverage-guided, atheris).

A regression is an input that once crashed the engine (``regressions/<target>/``); it must
now be rejected with the engine's own one-line error. ``FUZZ_TEST_SECONDS`` (default 2)
is each target's share of the bounded run, from a fixed seed; ``make fuzz`` runs longer from
random seeds.
"""

import os
import signal
import subprocess
import sys
import tracemalloc

import pytest

from tests.fuzz import run, targets

SECONDS = int(os.environ.get("FUZZ_TEST_SECONDS", "2"))
SEED = 1                     # fixed: a run of the tests tries the inputs the last one tried
REPLAY_TIMEOUT = 20          # seconds for one input: more is a hang
REPLAY_MEMORY = 256 << 20    # bytes Python may allocate for one input: more is a bug


def _files(kind):
    root = os.path.join(run.HERE, kind)
    return [pytest.param(target, os.path.join(root, target, name), id="%s/%s" % (target, name))
            for target in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, target))
            for name in sorted(os.listdir(os.path.join(root, target)))]


def _replay(target, path):
    """Run one file through its target within the time and memory bounds; its outcome."""
    with open(path, "rb") as f:
        data = f.read()
    targets.world()

    def hang(_signum, _frame):
        raise targets.Bug("%s: still running after %d s" % (path, REPLAY_TIMEOUT))

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(REPLAY_TIMEOUT)
    tracemalloc.start()
    try:
        outcome = targets.run(target, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert peak <= REPLAY_MEMORY, "%s made Python allocate %d bytes" % (path, peak)
    return outcome


@pytest.mark.parametrize("target, path", _files("corpus"))
def test_corpus_replays(target, path):
    assert _replay(target, path) in ("accepted", "rejected")


@pytest.mark.parametrize("target, path", _files("regressions"))
def test_regression_is_rejected(target, path):
    assert _replay(target, path) == "rejected"


@pytest.mark.parametrize("target", sorted({p.values[0] for p in _files("regressions")}))
def test_regressions_are_rejected_under_the_fuzzing_memory_limit(target):
    """Allocations outside Python's allocator (liblzma's, say) escape tracemalloc: the
    regressions run again in a child with the fuzzing children's address-space limit."""
    paths = [p.values[1] for p in _files("regressions") if p.values[0] == target]
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz.run", "--replay", target] + paths,
                          cwd=run.REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": rejected") == len(paths), proc.stdout


def test_every_target_has_a_small_seed_corpus():
    total = 0
    for name in targets.TARGETS:
        folder = os.path.join(run.HERE, "corpus", name)
        files = os.listdir(folder) if os.path.isdir(folder) else []
        assert files, "target %s has no seed corpus" % name
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    assert total < 2 << 20, "committed corpus is %d bytes" % total


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_fuzz_briefly(name, tmp_path):
    found, log = run.fuzz_one(name, SECONDS, str(tmp_path), seed=SEED)
    if found:
        with open(log, errors="replace") as f:
            lines = [line for line in f if not line.startswith("INFO: Instrumenting")]
        pytest.fail("fuzzing %s found %s:\n%s" % (name, ", ".join(found), "".join(lines[-60:])))
