#!/usr/bin/env python3
"""``make demo``: base VM -> VM overlay -> VM synthesis on real libvirt, told step by step.

Uses the ``cloudlet`` CLI on the embedded defaults (``$CLOUDLET_HOME``, qemu:///system,
the tiny test guest). Everything it creates is removed at the end unless ``--keep``.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cloudlet_compute import domains  # noqa: E402
from tests.support import story as storymod  # noqa: E402
from tests.support.httpserve import FileServer  # noqa: E402


def say(text):
    print("==> %s" % text, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the domains running")
    args = parser.parse_args()
    root = os.path.join(os.environ.get("CLOUDLET_HOME", ".state/cloudlet"), "..", "demo")
    conn = domains.connect()
    story = storymod.Story(conn, root, prefix="demo")
    start = time.monotonic()
    try:
        say("booting the tiny guest (Debian cloud kernel + busybox, TCG)")
        source = story.boot_source()
        say("cloudlet base create %s --name tiny-base   (the source keeps running)" % source)
        base_id = story.create_base(source)
        print("    base id %s" % base_id)
        say("cloudlet resume %s --name %s" % (base_id[:12], story.name("cust")))
        customized = story.resume(base_id)
        say("customizing inside the guest: a shell variable, 16 MiB random in tmpfs, "
            "a 4 MiB file on disk")
        expected = story.customize(customized)
        for key in ("var", "rand", "file", "tick"):
            print("    %-5s %s" % (key, expected[key]))
        overlay = os.path.join(story.root, "overlay.zip")
        say("cloudlet overlay create %s -o overlay.zip" % customized)
        made = story.create_overlay(customized, overlay)
        print("    %d bytes, chunks by source %s, VM paused %.2f s"
              % (os.path.getsize(overlay), made["sources"], made["timings"]["downtime"]))
        with FileServer(story.root) as server:
            say("cloudlet synthesis %s --name %s   (while %s still runs)"
                % (server.url("overlay.zip"), story.name("syn"), customized))
            name, result = story.synthesize(server.url("overlay.zip"))
        print("    synthesized in %.2f s: %s" % (result["timings"]["total"], ", ".join(
            "%s %.2f s" % (k, v) for k, v in result["timings"].items() if k != "total")))
        observed = story.observe(name)
        say("state of the synthesized guest")
        same = True
        for key in ("var", "rand", "file", "copy"):
            ok = observed[key] == expected[key]
            same &= ok
            print("    %-5s %s  %s" % (key, observed[key], "same" if ok else "DIFFERENT"))
        print("    tick  %s -> %s (continued, not rebooted)" % (expected["tick"], observed["tick"]))
        say("demo %s in %.0f s" % ("succeeded" if same else "FAILED", time.monotonic() - start))
        return 0 if same else 1
    finally:
        if not args.keep:
            story.cleanup()


if __name__ == "__main__":
    sys.exit(main())
