"""Coverage-guided fuzzing of the engine's parsers with atheris (libFuzzer for Python).

    python -m tests.fuzz.run [--seconds TOTAL] [--target NAME ...] [--out DIR]
    python -m tests.fuzz.run --replay NAME FILE ...   (under the same memory limit)

Every target (``tests/fuzz/targets.py``) runs in its own child process for its share of
TOTAL seconds (``make fuzz`` passes ``FUZZ_SECONDS``), one after the other, with the engine
instrumented for coverage, an address-space limit (an absurd allocation fails there instead
of swapping) and a per-input time limit (a hang is a finding). The committed corpus
``corpus/<target>/`` and the regressions ``regressions/<target>/`` are the seeds; inputs
that reach new code go to ``DIR/<target>/corpus`` (default ``.state/fuzz``), findings to
``DIR/<target>/crash-*`` (or ``timeout-*``, ``oom-*``). A finding is fixed in the engine and
its input copied to ``regressions/<target>/``, which ``test_fuzz.py`` replays.

Exit status: 0 when no target found anything, 1 otherwise.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(REPO, ".state", "fuzz")
ADDRESS_SPACE = 1 << 30      # per fuzzing child (it starts at ~160 MB); more is an absurd allocation
INPUT_TIMEOUT = 10           # seconds one input may take before it counts as a hang
FINDINGS = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")
INSTRUMENTED = ["cloudlet_compute", "zipfile", "json", "tests.fuzz.targets",
                "bench.synthetic"]


def seed_dirs(name):
    """The committed corpus and regression folders of target ``name`` that exist."""
    return [d for d in (os.path.join(HERE, "corpus", name), os.path.join(HERE, "regressions", name))
            if os.path.isdir(d)]


def findings(folder):
    """Finding files libFuzzer left in ``folder``."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(FINDINGS))


def fuzz_one(name, seconds, out, seed=None):
    """Fuzz target ``name`` for ``seconds`` in a child; return ``(findings, log path)``.
    With ``seed`` the inputs tried are always the same sequence (a slower machine tries a
    prefix of it), so what ``make test`` finds, it finds again."""
    work = os.path.join(out, name)
    corpus = os.path.join(work, "corpus")
    os.makedirs(corpus, exist_ok=True)
    log = os.path.join(work, "log")
    seeds = [os.path.join(d, f) for d in seed_dirs(name) for f in os.listdir(d)]
    max_len = max([4096] + [os.path.getsize(p) for p in seeds])
    args = [sys.executable, "-m", "tests.fuzz.run", "--child", name, "--",
            "-max_total_time=%d" % max(1, seconds), "-timeout=%d" % INPUT_TIMEOUT,
            "-max_len=%d" % max_len,
            "-rss_limit_mb=3072", "-print_final_stats=1",
            "-artifact_prefix=%s/" % work] + (["-seed=%d" % seed] if seed else []) \
        + [corpus] + seed_dirs(name)
    from tests.fuzz.targets import scratch_dir
    scratch = scratch_dir()         # the child's files; a crashing child leaves them behind
    try:
        with open(log, "w") as f:
            proc = subprocess.run(args, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=seconds + 120,
                                  env=dict(os.environ, CLOUDLET_FUZZ_ROOT=scratch))
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "killed after %d s" % (seconds + 120)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    found = findings(work)
    if code != 0 and not found:
        found = ["%s (child exit %s, no artifact)" % (log, code)]
    return found, log


def fuzz_all(names, total_seconds, out=DEFAULT_OUT, echo=print):
    """Fuzz each target for its share of ``total_seconds``; return ``{name: findings}``."""
    share = max(1, int(total_seconds // len(names)))
    results = {}
    for name in names:
        t0 = time.monotonic()
        found, log = fuzz_one(name, share, out)
        results[name] = found
        echo("fuzz %-18s %3d s  %s  (%s)" % (name, time.monotonic() - t0,
                                             "FOUND %d" % len(found) if found else "ok",
                                             _stats(log)))
        for path in found:
            echo("    %s" % path)
    return results


def _stats(log):
    """Runs and coverage from a libFuzzer log's last lines."""
    stats = {}
    with open(log, errors="replace") as f:
        for line in f:
            if line.startswith("stat::number_of_executed_units:"):
                stats["runs"] = line.split(":")[-1].strip()
            elif " cov: " in line:
                stats["cov"] = line.split(" cov: ")[1].split()[0]
    return ", ".join("%s %s" % kv for kv in sorted(stats.items())) or "no stats"


def child(name, libfuzzer_args):
    """Inside the child: limit memory, instrument the engine, fuzz ``name``."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    import atheris
    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz import targets
    targets.world()                       # the fixtures, made before the clock starts
    run = targets.run

    def one_input(data):
        run(name, data)

    atheris.Setup([sys.argv[0]] + libfuzzer_args, one_input)
    atheris.Fuzz()


def replay(name, paths):
    """Run ``paths`` through target ``name``; print each outcome (a bug's traceback).
    Returns 1 if any was a bug."""
    import traceback
    from tests.fuzz import targets
    bad = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            print("%s: %s" % (path, targets.run(name, data)))
        except Exception:   # a finding: show it and go on with the next file
            bad += 1
            print("%s: BUG" % path)
            traceback.print_exc()
    return 1 if bad else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600,
                        help="total fuzzing time, shared by the targets (default 600)")
    parser.add_argument("--target", action="append",
                        help="fuzz only this target (repeatable; default: all)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="corpus and findings (%(default)s)")
    parser.add_argument("--replay", nargs="+", metavar=("NAME", "FILE"),
                        help="replay FILEs through target NAME")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.child:
        return child(args.child, [a for a in rest if a != "--"])
    if args.replay:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
        return replay(args.replay[0], args.replay[1:])
    from tests.fuzz.targets import TARGETS   # here only: the children import it instrumented
    unknown = set(args.target or ()) - set(TARGETS)
    if unknown:
        parser.error("unknown target(s) %s; known: %s" % (", ".join(sorted(unknown)),
                                                         ", ".join(TARGETS)))
    results = fuzz_all(args.target or list(TARGETS), args.seconds, args.out)
    found = sum(len(f) for f in results.values())
    print("fuzz: %d finding(s) in %d target(s)" % (found, len(results)))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
