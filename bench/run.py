"""``make bench``: the demo workload once, every figure measured in the same run.

boot the tiny guest -> ``base create`` -> ``resume`` -> customize -> ``overlay create``
(size, creation time, downtime) -> one more capture of the customized domain for the
baselines (naive delta and whole VM, compressed with qemu-img -c and xz -6) and the codec
comparison (``bench/codec_choice.py``) -> 3 times: ``synthesis`` from a local Range-capable HTTP
server, then its floor (``virsh save`` the synthesized VM, time ``virsh restore`` of that
image); every synthesized and restored guest is checked against the customized one.

Prints the JSON document on stdout (also saved to ``.state/bench/overlay.json``) and a
human table on stderr. Exits non-zero, without figures, if any step or check fails.
"""

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import libvirt

from bench import codec_choice as codec_bench
from bench import human, log, median, publish, state_dir
from cloudlet_compute import bases
from cloudlet_compute.format import blobcodec
from cloudlet_compute.host import domains
from cloudlet_compute.write import capture
from stack.guest import guest
from stack.httpserve import FileServer
from stack.story import CUSTOMIZE, Story, parse_observation

TARGET_OVERLAY_OVER_NAIVE = 0.3
TARGET_SYNTHESIS_OVER_FLOOR = 2.0
RANDOM_PAYLOAD = (16 + 4) << 20   # /run/rand + /mnt/file4m (/run/copy repeats the latter)
SAME_STATE = ("var", "rand", "file", "copy")   # what customize wrote; must survive synthesis
# Read the 4 MiB file from the disk itself, not from the page cache the memory image holds.
DISK_CHECK = "sync; echo 3 > /proc/sys/vm/drop_caches; echo file=$(md5sum < /mnt/file4m)"


class BenchError(Exception):
    """The bench cannot report figures: a step failed or a result is wrong."""


def _timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - t0


def _run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, **kwargs)


def check_state(expected, observed, where):
    """Raise BenchError unless ``observed`` shows the customized guest, memory intact."""
    for key in SAME_STATE:
        if not expected.get(key) or observed.get(key) != expected[key]:
            raise BenchError("%s: %s is %r, the customized guest had %r"
                             % (where, key, observed.get(key), expected.get(key)))
    if int(observed.get("tick") or -1) < int(expected["tick"]):
        raise BenchError("%s: tick %s < %s of the customized guest: not its memory (rebooted?)"
                         % (where, observed.get("tick"), expected["tick"]))


# -- figure 1: baselines ------------------------------------------------------------------------

def baselines(base, cap, work):
    """Naive delta and whole VM of the captured customized domain, compressed the usual way."""
    out = {}
    naive_disk = os.path.join(work, "naive-disk.qcow2")
    whole_disk = os.path.join(work, "whole-disk.qcow2")
    _, out["naive_disk_s"] = _timed(_run, [
        "qemu-img", "convert", "-U", "-c", "-O", "qcow2", "-B", base.disk_path, "-F", "raw",
        cap.disk_path, naive_disk])
    _, out["whole_disk_s"] = _timed(_run, [
        "qemu-img", "convert", "-U", "-c", "-O", "qcow2", cap.disk_path, whole_disk])
    memory_xz = os.path.join(work, "memory.img.xz")
    with open(memory_xz, "wb") as f:
        _, out["memory_xz_s"] = _timed(_run, ["xz", "-6", "-T1", "-c", cap.memory_path], stdout=f)
    sizes = {"save_image": os.path.getsize(cap.memory_path),
             "save_image_xz6": os.path.getsize(memory_xz),
             "disk_delta_qcow2_c": os.path.getsize(naive_disk),
             "disk_full_qcow2_c": os.path.getsize(whole_disk)}
    for path in (naive_disk, whole_disk, memory_xz):
        os.unlink(path)
    return {
        "naive": {"bytes": sizes["disk_delta_qcow2_c"] + sizes["save_image_xz6"],
                  "disk_bytes": sizes["disk_delta_qcow2_c"],
                  "memory_bytes": sizes["save_image_xz6"],
                  "pack_s": round(out["naive_disk_s"] + out["memory_xz_s"], 2),
                  "how": "qemu-img convert -c -O qcow2 -B <base disk.raw> -F raw <disk> "
                         "+ xz -6 -T1 <save image>"},
        "whole": {"bytes": sizes["disk_full_qcow2_c"] + sizes["save_image_xz6"],
                  "disk_bytes": sizes["disk_full_qcow2_c"],
                  "memory_bytes": sizes["save_image_xz6"],
                  "pack_s": round(out["whole_disk_s"] + out["memory_xz_s"], 2),
                  "how": "qemu-img convert -c -O qcow2 <disk> (no backing) "
                         "+ xz -6 -T1 <save image>"},
        "save_image_bytes": sizes["save_image"],
        "disk_virtual_bytes": base.disk_size,
        "source": "one capture (virsh save + copy of the qcow2 top layer + restore) of the "
                  "customized domain, right after overlay create",
    }


# -- figure 3: synthesis and its floor ----------------------------------------------------------

def synthesis_and_floor(story, conn, overlay_dir, overlay_name, expected, runs):
    """``runs`` times: ``cloudlet synthesis URL --json``, then the floor right after it.

    The floor of run i: the synthesized domain is saved (``virsh save``) and the time of
    restoring that image (libvirt ``restoreFlags``, what ``virsh restore`` calls and the
    last step of synthesis) is measured. Pairing each synthesis with its floor keeps
    both under the same host load. Every synthesized and restored guest is checked
    against the customized one; the disk is checked with the page cache dropped.
    """
    rows = []
    with FileServer(overlay_dir) as server:
        url = server.url(overlay_name)
        for i in range(runs):
            (name, out), wall = _timed(story.synthesize, url, role="syn%d" % i)
            check_state(expected, story.observe(name), "synthesis %d" % i)
            image = os.path.join(story.root, "floor.img")
            try:
                conn.lookupByName(name).save(image)
                size = os.path.getsize(image)
                _, floor = _timed(conn.restoreFlags, image, None,
                                  libvirt.VIR_DOMAIN_SAVE_RUNNING)
            finally:
                if os.path.exists(image):
                    os.unlink(image)
            check_state(expected, story.observe(name), "restored floor image %d" % i)
            with story.channel(name) as chan:
                disk = parse_observation(chan.run(DISK_CHECK, timeout=60))
            if disk.get("file") != expected["file"]:
                raise BenchError("synthesis %d: /mnt/file4m read from disk is %r, expected %r"
                                 % (i, disk.get("file"), expected["file"]))
            guest.destroy(conn, name)
            shutil.rmtree(os.path.join(story.home, "instances", name), ignore_errors=True)
            t = out["timings"]
            rows.append({"total_s": round(t["total"], 3), "cli_wall_s": round(wall, 3),
                         "phases_s": {k: round(v, 3) if isinstance(v, float) else v
                                      for k, v in t.items() if k != "total"},
                         "floor_s": round(floor, 3), "floor_image_bytes": size,
                         "ratio": round(t["total"] / floor, 2)})
            log("synthesis %d: %.2f s (CLI %.2f s), floor %.2f s (%s image): %.2fx; guest "
                "state verified", i, t["total"], wall, floor, human(size), t["total"] / floor)
        requests = len(server.requests)
    return rows, requests


# -- the run ------------------------------------------------------------------------------------

def host_info(conn):
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                          text=True).stdout.splitlines()[:1]
    v = conn.getLibVersion()
    return {"cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "qemu": qemu[0] if qemu else "?",
            "libvirt": "%d.%d.%d" % (v // 1000000, v // 1000 % 1000, v % 1000),
            "accel": "tcg", "note": "shared host: other VMs may run on the same 2 cores"}


def start_doc(bench, conn):
    """A bench's JSON document as it starts: its name, the date, the host and its load now;
    and the start time, for ``end_doc``."""
    doc = {"bench": bench, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "host": host_info(conn)}
    doc["host"]["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    doc["host"]["other_domains_running"] = conn.numOfDomains()
    return doc, time.monotonic()


def end_doc(doc, t_start):
    """``doc`` with the load at the end and the bench's wall time since ``t_start``."""
    doc["host"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["bench_wall_s"] = round(time.monotonic() - t_start, 1)
    return doc


def run(runs, with_codecs=True):
    conn = domains.connect()
    prefix = "bench-%s" % uuid.uuid4().hex[:6]
    story = Story(conn, tempfile.mkdtemp(prefix="run-", dir=state_dir()), prefix)
    doc, t_start = start_doc("overlay", conn)
    try:
        log("booting the tiny guest (domains %s-*)", prefix)
        source = story.boot_source()
        base_id = story.create_base(source)
        guest.destroy(conn, source)
        store = bases.BaseStore(story.home)
        base = store.get(base_id)
        cust = story.resume(base_id)
        expected = story.customize(cust)
        log("customized %s: %s", cust, {k: expected.get(k) for k in ("var", "tick")})

        overlay_dir = os.path.join(story.root, "overlays")
        os.makedirs(overlay_dir)
        overlay_path = os.path.join(overlay_dir, "overlay.zip")
        created, create_wall = _timed(story.create_overlay, cust, overlay_path)
        check_state(expected, story.observe(cust), "customized domain after overlay create")
        t = created["timings"]
        log("overlay: %s in %.2f s (downtime %.2f s)", human(created["size"]), t["total"],
            t["downtime"])
        doc["workload"] = {"customize": CUSTOMIZE, "guest_ram_bytes": base.ram_size,
                           "disk_bytes": base.disk_size,
                           "base_memory_image_bytes": base.memory_size,
                           "unique_random_bytes_written": RANDOM_PAYLOAD}
        doc["overlay"] = {"bytes": created["size"],
                          "codec": blobcodec.NAMES[blobcodec.DEFAULT_CODEC],
                          "level": blobcodec.DEFAULT_LEVELS[blobcodec.DEFAULT_CODEC],
                          "chunks_by_source": created["sources"]}
        doc["creation"] = {"total_s": round(t["total"], 3), "downtime_s": round(t["downtime"], 3),
                           "phases_s": {k: round(v, 3) for k, v in t.items()
                                        if k not in ("total", "downtime")},
                           "cli_wall_s": round(create_wall, 3)}

        work = os.path.join(story.root, "capture")
        os.makedirs(work, mode=0o755)
        cap = capture.capture(conn, cust, work)
        guest.destroy(conn, cust)   # not needed any more: free the CPU for what is timed next
        log("captured %s again for the baselines: save image %s",
            cust, human(os.path.getsize(cap.memory_path)))
        doc["baselines"] = baselines(base, cap, work)
        naive, whole = doc["baselines"]["naive"]["bytes"], doc["baselines"]["whole"]["bytes"]
        log("baselines: naive %s, whole %s", human(naive), human(whole))
        doc["size_ratios"] = {
            "overlay_over_naive": round(created["size"] / naive, 4),
            "overlay_over_whole": round(created["size"] / whole, 4),
            "target_overlay_over_naive": TARGET_OVERLAY_OVER_NAIVE,
            "meets_target": created["size"] <= TARGET_OVERLAY_OVER_NAIVE * naive,
            # No overlay can be smaller than the unique random bytes the workload wrote.
            "random_payload_over_naive": round(RANDOM_PAYLOAD / naive, 4)}
        if with_codecs:
            content = codec_bench.overlay_content(base, cap.memory_path, cap.disk_path, work)
            doc["codecs"] = codec_bench.compare(content)
        shutil.rmtree(work)

        rows, requests = synthesis_and_floor(story, conn, overlay_dir, "overlay.zip",
                                             expected, runs)
        syn = median([r["total_s"] for r in rows])
        floor = median([r["floor_s"] for r in rows])
        doc["synthesis"] = {
            "runs": rows, "median_s": syn,
            "cli_wall_median_s": median([r["cli_wall_s"] for r in rows]),
            "floor_median_s": floor,
            "source": "http://127.0.0.1 (stack.httpserve.FileServer, Range requests: "
                      "%d GETs over %d runs)" % (requests, runs),
            "floor_how": "virsh save of the synthesized domain, then libvirt "
                         "restoreFlags(RUNNING) of that image (local file, page cache warm)",
            "ratio_over_floor": round(median([r["ratio"] for r in rows]), 2),
            "ratio_of_medians": round(syn / floor, 2),
            "cli_wall_ratio_over_floor": round(median([r["cli_wall_s"] for r in rows])
                                               / floor, 2),
            "target_ratio": TARGET_SYNTHESIS_OVER_FLOOR,
            "meets_target": median([r["ratio"] for r in rows]) <= TARGET_SYNTHESIS_OVER_FLOOR,
            "verified": "every run: memory state (var, rand, file, copy, tick) of the "
                        "synthesized and of the restored guest, /mnt/file4m read from disk"}
    finally:
        story.cleanup()
    return end_doc(doc, t_start)


def table(doc):
    """The headline figures as a short human table."""
    b, r, c, s = doc["baselines"], doc["size_ratios"], doc["creation"], doc["synthesis"]
    rows = [
        ("overlay (%s-%d)" % (doc["overlay"]["codec"], doc["overlay"]["level"]),
         human(doc["overlay"]["bytes"]), ""),
        ("naive delta (qcow2 -c -B + xz -6)", human(b["naive"]["bytes"]),
         "overlay/naive = %.2fx (target <= %.1fx: %s; random payload alone %.2fx)" % (
             r["overlay_over_naive"], r["target_overlay_over_naive"],
             "met" if r["meets_target"] else "NOT met", r["random_payload_over_naive"])),
        ("whole VM (qcow2 -c + xz -6)", human(b["whole"]["bytes"]),
         "overlay/whole = %.2fx" % r["overlay_over_whole"]),
        ("overlay creation", "%.2f s" % c["total_s"],
         " ".join("%s %.2f" % kv for kv in c["phases_s"].items())),
        ("  downtime", "%.2f s" % c["downtime_s"], ""),
        ("synthesis (median of %d, HTTP)" % len(s["runs"]), "%.2f s" % s["median_s"],
         "runs %s; CLI wall %.2f s" % (", ".join("%.2f" % x["total_s"] for x in s["runs"]),
                                       s["cli_wall_median_s"])),
        ("floor: restore of the image", "%.2f s" % s["floor_median_s"],
         "synthesis/floor = %.2fx, median of the per-run ratios %s (target <= %.1fx: %s)" % (
             s["ratio_over_floor"], ", ".join("%.2f" % x["ratio"] for x in s["runs"]),
             s["target_ratio"], "met" if s["meets_target"] else "NOT met")),
    ]
    h = doc["host"]
    lines = ["host: %d cpus, load average %.1f at start / %.1f at end, %d other domains on "
             "libvirtd: timings are wall clock and move with the load" % (
                 h["cpus"], h["loadavg_start"][0], h["loadavg_end"][0],
                 h["other_domains_running"])]
    lines += ["%-36s %12s  %s" % row for row in rows]
    if "codecs" in doc:
        lines += ["", codec_bench.table(doc["codecs"])]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="synthesis repetitions (median)")
    parser.add_argument("--no-codecs", action="store_true", help="skip the codec comparison")
    args = parser.parse_args(argv)
    return run_and_publish("overlay.json", lambda: run(args.runs, not args.no_codecs), table)


def run_and_publish(name, produce, table, errors=()):
    """``publish`` the doc ``produce()`` returns as ``name`` with ``table(doc)``: exit code
    0; 1 and one FAILED line if it raises ``BenchError``, ``GuestError`` or ``errors``."""
    try:
        doc = produce()
    except (BenchError, guest.GuestError) + tuple(errors) as exc:
        log("FAILED: %s", exc)
        return 1
    publish(name, doc, table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
