"""A deleted file does not grow the overlay (issue 13 item 7): overlay size of one running VM
before and after it writes a 256 MiB random file to its disk, syncs, deletes it and trims.

The tiny guest with 512 MiB of RAM and a 512 MiB ext4 disk (4 KiB blocks; the stock 64 MiB
one cannot hold the file), TCG: boot, ``cloudlet base create``, ``resume``, the story's
customization, ``cloudlet overlay create`` (``plain``); then in the same VM::

    dd if=/dev/urandom of=/mnt/big bs=1M count=256; sync; rm /mnt/big; sync; fstrim -v /mnt

and ``cloudlet overlay create`` again (``deleted``); a synthesis of ``deleted`` must show the
customized guest. What keeps the file out: the disk's trims become zero clusters of the
instance qcow2 (``domxml.DISK_DISCARD``) and the freed page cache is zeroed by the guest
kernel (``init_on_free=1``, ``guest.ZERO_FREED_PAGES``). ``--without-zeroing`` runs the same
once more on a guest booted without ``init_on_free=1``: what the freed page cache costs.

``python -m bench.freepages [--without-zeroing]`` (from the repository's root; ~1.5 min per
guest). JSON on stdout (also ``.state/bench/freepages.json``), a table on stderr.
"""

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time

from bench import log, publish, state_dir

MiB = 1 << 20
FILE_MIB = 256
WRITE_DELETE_TRIM = ("dd if=/dev/urandom of=/mnt/big bs=1M count=%d 2>/dev/null; sync; "
                     "rm /mnt/big; sync; fstrim -v /mnt")


def measure(conn, root, zero_freed_pages=True, file_mib=FILE_MIB, memory_mib=512,
            disk_mib=512):
    """Run the case in the new directory ``root`` (QEMU-searchable), a ``file_mib`` file in
    a guest of ``memory_mib`` RAM and ``disk_mib`` disk; return its figures:
    ``plain_bytes``, ``deleted_bytes``, ``growth_bytes``, the guest's ``fstrim`` line, the
    seconds of each step, and ``expected``/``observed`` (``stack.story.OBSERVE``) of the
    customized and the synthesized guest."""
    from stack import story as storymod
    from stack.guest import guest

    cmdline = guest.KERNEL_CMDLINE
    if not zero_freed_pages:
        cmdline = cmdline.replace(guest.ZERO_FREED_PAGES, "").strip()
    image = guest.tiny_with_blocks(os.path.join(root, "guest"), 4096, disk_mib=disk_mib,
                                   memory_mib=memory_mib, cmdline=cmdline)
    story = storymod.Story(conn, os.path.join(root, "story"), image=image)
    case = {"zero_freed_pages": zero_freed_pages, "memory_mib": memory_mib,
            "disk_mib": disk_mib, "file_mib": file_mib, "seconds": {}}
    seconds = case["seconds"]
    try:
        t = time.monotonic()
        source = story.boot_source()
        base_id = story.create_base(source)
        guest.destroy(conn, source)
        domain = story.resume(base_id)
        case["expected"] = story.customize(domain)
        seconds["boot_base_resume_customize"] = round(time.monotonic() - t, 1)
        paths = {}
        for step in ("plain", "deleted"):
            if step == "deleted":
                t = time.monotonic()
                with story.channel(domain) as chan:
                    case["fstrim"] = chan.run(WRITE_DELETE_TRIM % file_mib,
                                              timeout=600).strip()
                seconds["write_delete_trim"] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            paths[step] = os.path.join(story.root, "%s.zip" % step)
            case["%s_sources" % step] = story.create_overlay(domain, paths[step])["sources"]
            case["%s_bytes" % step] = os.path.getsize(paths[step])
            seconds["overlay_%s" % step] = round(time.monotonic() - t, 1)
        case["growth_bytes"] = case["deleted_bytes"] - case["plain_bytes"]
        t = time.monotonic()
        synthesized, _ = story.synthesize(paths["deleted"])
        case["observed"] = story.observe(synthesized)
        seconds["synthesis_observe"] = round(time.monotonic() - t, 1)
        return case
    finally:
        story.cleanup()


def _table(doc):
    rows = ["%-16s %12s %12s %12s  %s" % ("init_on_free=1", "plain", "+file deleted", "growth",
                                          "guest fstrim")]
    for case in doc["cases"]:
        rows.append("%-16s %8.1f MiB %8.1f MiB %8.1f MiB  %s" % (
            "yes" if case["zero_freed_pages"] else "no", case["plain_bytes"] / MiB,
            case["deleted_bytes"] / MiB, case["growth_bytes"] / MiB, case["fstrim"]))
    return "\n".join(rows)


def main(argv=None):
    import libvirt
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--without-zeroing", action="store_true",
                        help="also run a guest booted without init_on_free=1")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    root = tempfile.mkdtemp(prefix="freepages-", dir=state_dir())
    os.chmod(root, 0o755)                      # mkdtemp made it 0700: QEMU must reach in
    conn = libvirt.open("qemu:///system")
    try:
        doc = {"bench": "freepages", "cpus": os.cpu_count(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "cases": []}
        for zeroing in ([True, False] if args.without_zeroing else [True]):
            log("guest %s init_on_free=1", "with" if zeroing else "without")
            work = os.path.join(root, "zero" if zeroing else "nozero")
            os.mkdir(work)
            os.chmod(work, 0o755)
            doc["cases"].append(measure(conn, work, zeroing))
        doc["bench_wall_s"] = round(time.monotonic() - t0, 1)
        publish("freepages.json", doc, _table(doc))
        return 0
    finally:
        conn.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
