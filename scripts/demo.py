"""``make demo`` (``python -m scripts.demo [--local]``): base VM -> VM overlay -> VM synthesis,
told step by step.

By default through the Nova API on the embedded OpenStack (started if needed): the base
VM is made from the tiny test guest with the ``cloudlet`` CLI, imported into Glance, and
everything after that is HTTP (openstacksdk). ``--local`` tells the same story with the
``cloudlet`` CLI on libvirt alone. Everything it creates is removed at the end.
"""

import argparse
import os
import sys
import time

import stack
from cloudlet_compute import imagemodel as model
from cloudlet_compute.host import domains
from stack import story as storymod
from stack.httpserve import FileServer
from stack.novastory import NovaStory


def say(text):
    print("==> %s" % text, flush=True)


def compare(expected, observed):
    """Print the guest's state next to the customized VM's; return True if equal."""
    same = True
    for key in ("var", "rand", "file", "copy"):
        ok = observed[key] == expected[key]
        same &= ok
        print("    %-5s %s  %s" % (key, observed[key], "same" if ok else "DIFFERENT"))
    print("    tick  %s -> %s (continued, not rebooted)" % (expected["tick"], observed["tick"]))
    return same


def nova_demo(story, start):
    """The story through Nova; ``story`` (a local Story) makes the base package."""
    say("starting the embedded OpenStack with OpenStack++ (make stack)")
    stack.up(cloudlet=True)
    say("making a base VM from the tiny guest: cloudlet base create + base export")
    base_id = story.create_base(story.boot_source())
    package = os.path.join(story.root, "base.zip")
    storymod.cloudlet(story.home, "base", "export", base_id, package)
    for name in list(story.domains):
        storymod.guest.destroy(story.conn, name)
    nova = NovaStory(stack.connect("cloudlet-demo"), stack.connect("cloudlet-admin"))
    try:
        say("importing it into Glance as four linked images (demo user)")
        ids = nova.import_base(package)
        print("    base disk image %s (base id %s...)" % (ids[model.BASE_DISK], base_id[:16]))
        say("POST /servers imageRef=<base disk>: the base VM's memory is restored, not booted")
        resumed = nova.boot("resumed", ids[model.BASE_DISK])
        say("customizing through nova's serial console: a shell variable, 16 MiB random "
            "in tmpfs, a 4 MiB file on disk")
        expected = nova.customize(resumed.id)
        say("POST /servers/%s/action {cloudlet-overlay-finish}" % resumed.id)
        overlay_id = nova.overlay_finish(resumed.id)
        served = os.path.join(story.root, "served")
        storymod.make_dir(served)
        nova.download(overlay_id, os.path.join(served, "overlay.zip"))
        print("    overlay image %s: %d bytes" % (
            overlay_id, os.path.getsize(os.path.join(served, "overlay.zip"))))
        with FileServer(served) as server:
            say("POST /servers with metadata overlay_url=%s" % server.url("overlay.zip"))
            t0 = time.monotonic()
            synthesized = nova.boot("synthesized", ids[model.BASE_DISK],
                                    overlay_url=server.url("overlay.zip"))
            print("    %s %s in %.1f s (POST to ACTIVE)"
                  % (synthesized.name, synthesized.status, time.monotonic() - t0))
        say("state of the synthesized guest")
        same = compare(expected, nova.observe(synthesized.id))
    finally:
        nova.cleanup()
    say("demo %s in %.0f s" % ("succeeded" if same else "FAILED", time.monotonic() - start))
    return 0 if same else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local", action="store_true",
                        help="libvirt and the cloudlet CLI only, no OpenStack")
    args = parser.parse_args()
    root = os.path.join(os.environ.get("CLOUDLET_HOME", ".state/cloudlet"), "..", "demo")
    conn = domains.connect()
    story = storymod.Story(conn, root, prefix="demo")
    start = time.monotonic()
    try:
        if not args.local:
            return nova_demo(story, start)
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
        say("state of the synthesized guest")
        same = compare(expected, story.observe(name))
        say("demo %s in %.0f s" % ("succeeded" if same else "FAILED", time.monotonic() - start))
        return 0 if same else 1
    finally:
        story.cleanup()


if __name__ == "__main__":
    sys.exit(main())
