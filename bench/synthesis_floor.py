"""Synthesis and base resume over the base's RAM file against the ``virsh restore`` floor
(issue 14): time to a running guest as the RAM grows, with the same 48 MiB delta.

For each RAM size (default 512 MiB and 2 GiB) the tiny guest boots with its RAM filled (a
tmpfs of RAM - 200 MiB filled with non-zero pages), becomes a base (``cloudlet base create``,
which builds the RAM file), is resumed and customized with a fixed ~48 MiB delta (the story's
customization plus 24 MiB of random data in tmpfs), and ``cloudlet overlay create`` writes its
overlay. Then ``--runs`` times, alternating: ``cloudlet synthesis --json`` of the local overlay
on the delta path and on the full path (``CLOUDLET_RESTORE=full``), each CLI process's peak RSS
(``VmHWM``) taken; the floor: ``virsh save`` of the full-path synthesized VM (plain anonymous
RAM) and the time of restoring that image (``restoreFlags``, as ``virsh restore``); base resume
(``instances.resume`` in this process) on both paths. Every synthesized guest is checked
against the customized one (memory and tick), every resumed one answers.

``python -m bench.synthesis_floor [--sizes 512,2048] [--runs 2]`` (from the repository's root,
the libvirt hook installed: ``scripts/setup-host.sh``); JSON on stdout (also
``.state/bench/synthesis_floor.json``), a table on stderr.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from bench import log, median, publish, state_dir
from bench.run import BenchError, check_state, end_doc, start_doc
from cloudlet_compute import bases
from cloudlet_compute.host import domains, instances, ramfile, ramhook
from stack import story as storymod
from stack.guest import guest

TARGET_AT_2G = 0.25
FILL = ("mkdir -p /fill && mount -t tmpfs -o size={mib}m tmpfs /fill && "
        "head -c 16777216 /dev/urandom > /run/seed && "
        "i=0; while [ $i -lt {pieces} ]; do cat /run/seed; i=$((i+1)); done > /fill/f; "
        "rm /run/seed; echo filled $(du -m /fill/f)")
EXTRA = "head -c 25165824 /dev/urandom > /run/extra; sync"
# Runs the CLI in a child and reports its peak RSS, whatever the CLI prints.
CLI_RSS = ("import atexit, runpy, sys\n"
           "def hwm():\n"
           "    status = open('/proc/self/status').read()\n"
           "    kib = int(status.split('VmHWM:')[1].split()[0])\n"
           "    print('PEAK_RSS %d' % (kib * 1024), file=sys.stderr)\n"
           "atexit.register(hwm)\n"
           "sys.argv = ['cloudlet'] + sys.argv[1:]\n"
           "runpy.run_module('cloudlet_compute.cli', run_name='__main__')\n")


def _cli(home, args, full=False):
    """``cloudlet ARGS`` in a child: ``(stdout, peak RSS bytes, wall s)``."""
    env = dict(os.environ, CLOUDLET_HOME=home)
    env.pop(ramfile.FORCE_FULL, None)
    if full:
        env[ramfile.FORCE_FULL] = "full"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CLI_RSS] + args, capture_output=True,
                          text=True, env=env, cwd=guest.REPO_DIR)
    wall = time.monotonic() - t0
    if proc.returncode:
        raise BenchError("cloudlet %s: %s" % (" ".join(args), proc.stderr.strip()[-2000:]))
    rss = int(proc.stderr.rsplit("PEAK_RSS ", 1)[1].split()[0])
    return proc.stdout, rss, wall


def _synthesize(story, overlay, name, full):
    out, rss, wall = _cli(story.home, ["synthesis", overlay, "--name", name, "--json"], full)
    story.domains.append(name)
    timings = json.loads(out)["timings"]
    want = "full" if full else "delta"
    if timings["restore_path"] != want:
        raise BenchError("synthesis took the %s path, not %s: %s"
                         % (timings["restore_path"], want, timings.get("restore_why")))
    return {"total_s": round(timings["total"], 3),
            "memory_restore_s": round(timings["memory_restore"], 3),
            "cli_wall_s": round(wall, 3), "peak_rss_bytes": rss}


def _floor(conn, story, name):
    image = os.path.join(story.root, "floor.img")
    try:
        conn.lookupByName(name).save(image)
        size = os.path.getsize(image)
        t0 = time.monotonic()
        conn.restoreFlags(image, None, 0)
        return round(time.monotonic() - t0, 3), size
    finally:
        if os.path.exists(image):
            os.unlink(image)


def _resume(conn, story, base, name, full):
    if full:
        os.environ[ramfile.FORCE_FULL] = "full"
    try:
        placement = instances.Placement.in_home(story.home, name)
        story.domains.append(name)
        t0 = time.monotonic()
        instances.resume(conn, base, placement)
        took = time.monotonic() - t0
    finally:
        os.environ.pop(ramfile.FORCE_FULL, None)
    if placement.restore_path != ("full" if full else "delta"):
        raise BenchError("resume took the %s path: %s" % (placement.restore_path,
                                                          placement.restore_why))
    story.channel(name).close()        # the resumed guest answers
    return round(took, 3)


def measure(conn, mib, runs):
    """Everything for the tiny guest with ``mib`` MiB of RAM."""
    image = guest.Image(guest.GUEST_DIR, memory_mib=mib, boot_timeout=120)
    story = storymod.Story(conn, tempfile.mkdtemp(prefix="floor-", dir=state_dir()),
                           "bfl-%s" % uuid.uuid4().hex[:6], image=image)
    try:
        source = story.boot_source()
        fill = mib - 200
        with story.channel(source) as chan:
            log("%d MiB: filling %d MiB of guest RAM", mib, fill)
            chan.run(FILL.format(mib=fill + 8, pieces=fill // 16), timeout=600)
        t0 = time.monotonic()
        base_id = story.create_base(source)
        create_s = time.monotonic() - t0
        guest.destroy(conn, source)
        base = bases.BaseStore(story.home).get(base_id)
        cust = story.resume(base_id)
        expected = story.customize(cust)
        with story.channel(cust) as chan:
            chan.run(EXTRA, timeout=120)
        overlay = os.path.join(story.root, "overlay.zip")
        created = story.create_overlay(cust, overlay)
        guest.destroy(conn, cust)
        log("%d MiB: base in %.1f s, overlay %.1f MiB", mib, create_s, created["size"] / 2 ** 20)
        rows = {"delta": [], "full": [], "floor": [], "resume_delta": [], "resume_full": []}
        for i in range(runs):
            for path in ("delta", "full"):
                name = story.name("%s%d" % (path, i))
                rows[path].append(_synthesize(story, overlay, name, path == "full"))
                check_state(expected, story.observe(name), "%s synthesis %d" % (path, i))
                if path == "full":
                    floor, floor_bytes = _floor(conn, story, name)
                    rows["floor"].append(floor)
                    check_state(expected, story.observe(name), "floor restore %d" % i)
                guest.destroy(conn, name)
            for path in ("delta", "full"):
                name = story.name("res-%s%d" % (path, i))
                rows["resume_" + path].append(_resume(conn, story, base, name, path == "full"))
                guest.destroy(conn, name)
            log("%d MiB run %d: delta %.2f s, full %.2f s, floor %.2f s, resume %.2f / %.2f s",
                mib, i, rows["delta"][-1]["total_s"], rows["full"][-1]["total_s"],
                rows["floor"][-1], rows["resume_delta"][-1], rows["resume_full"][-1])
        floor = median(rows["floor"])
        result = {"ram_mib": mib, "filled_mib": fill, "base_create_s": round(create_s, 1),
                  "overlay_bytes": created["size"], "floor_image_bytes": floor_bytes,
                  "runs": rows, "floor_s": floor}
        for path in ("delta", "full"):
            result[path] = {"total_s": median([r["total_s"] for r in rows[path]]),
                            "cli_wall_s": median([r["cli_wall_s"] for r in rows[path]]),
                            "peak_rss_mib": round(max(r["peak_rss_bytes"] for r in rows[path])
                                                  / 2 ** 20)}
            result[path]["over_floor"] = round(result[path]["total_s"] / floor, 3)
            result["resume_" + path] = {"s": median(rows["resume_" + path]),
                                        "over_floor": round(median(rows["resume_" + path])
                                                            / floor, 3)}
        return result
    finally:
        story.cleanup()


def table(doc):
    lines = ["%-8s %-22s %9s %9s %10s" % ("RAM", "what", "s", "/floor", "peak RSS")]
    for size in doc["sizes"]:
        ram = "%d MiB" % size["ram_mib"]
        lines.append("%-8s %-22s %9.2f %9s %10s" % (ram, "virsh restore (floor)",
                                                   size["floor_s"], "1.00", ""))
        for path in ("delta", "full"):
            r = size[path]
            lines.append("%-8s %-22s %9.2f %9.2f %6d MiB" % (
                "", "synthesis, %s path" % path, r["total_s"], r["over_floor"],
                r["peak_rss_mib"]))
        for path in ("delta", "full"):
            r = size["resume_" + path]
            lines.append("%-8s %-22s %9.2f %9.2f" % ("", "base resume, %s" % path, r["s"],
                                                      r["over_floor"]))
    lines.append("target: synthesis <= %.2fx the floor at 2 GiB: %s" % (
        TARGET_AT_2G, doc.get("meets_target", "not measured")))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="512,2048", help="RAM sizes in MiB, comma-separated")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    if not ramhook.installed():
        sys.exit("bench: the libvirt hook %s is not installed (scripts/setup-host.sh)"
                 % ramhook.HOOK_PATH)
    conn = domains.connect()
    doc, t_start = start_doc("synthesis_floor", conn)
    doc["delta"] = "story customization (16 MiB + 4 MiB random, a 4 MiB disk file and its copy) " \
                   "+ 24 MiB random in tmpfs: ~48 MiB of memory"
    doc["sizes"] = [measure(conn, int(mib), args.runs) for mib in args.sizes.split(",")]
    at_2g = [s for s in doc["sizes"] if s["ram_mib"] == 2048]
    if at_2g:
        doc["meets_target"] = at_2g[0]["delta"]["over_floor"] <= TARGET_AT_2G
    publish("synthesis_floor.json", end_doc(doc, t_start), table(doc))


if __name__ == "__main__":
    main()
