"""The cloudlet story on real libvirt, told through the ``cloudlet`` CLI.

boot the tiny guest -> ``base create`` -> ``resume`` -> customize inside the guest ->
``overlay create`` -> ``synthesis`` -> read the guest's state back. Used by the tests, by
``make demo`` and by ``make bench``, so all three exercise the same path.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid

from .guest import guest

CLI = [sys.executable, "-m", "cloudlet_compute.cli"]

# What "customize" does inside the guest: a shell variable, 16 MiB of random data in
# tmpfs, a 4 MiB file on disk and a copy of it in tmpfs.
CUSTOMIZE = ("STORY_VAR={token}; head -c 16777216 /dev/urandom > /run/rand; "
             "head -c 4194304 /dev/urandom > /mnt/file4m; cp /mnt/file4m /run/copy; sync")
OBSERVE = ("echo var=$STORY_VAR; echo rand=$(md5sum < /run/rand); "
           "echo file=$(md5sum < /mnt/file4m); echo copy=$(md5sum < /run/copy); "
           "echo tick=$(cat /run/tick); echo uptime=$(cut -d' ' -f1 /proc/uptime)")

# A writer on the guest's disk that goes on through a handoff: rewrites 8 chunks of a 1 MiB
# file every 0.1 s, synced (so at most 256 chunks of it are ever dirty).
DISK_WRITER = ("head -c 1048576 /dev/urandom > /mnt/during; sync; "
               "(i=0; while :; do dd if=/dev/urandom of=/mnt/during bs=4096 count=8 "
               "seek=$((i % 32 * 8)) conv=notrunc,fsync 2>/dev/null; i=$((i+1)); sleep 0.1; "
               "done) >/dev/null 2>&1 & echo $! > /run/writer.pid")
# Stops DISK_WRITER and says whether its file reads the same from the page cache and from
# the disk ("same" or "differs").
DISK_EQUALS_CACHE = ("kill $(cat /run/writer.pid); sleep 0.3; sync; a=$(md5sum < /mnt/during); "
                     "echo 3 > /proc/sys/vm/drop_caches; b=$(md5sum < /mnt/during); "
                     "[ \"$a\" = \"$b\" ] && echo same || echo differs")


class CliError(Exception):
    """A ``cloudlet`` command failed; ``rc`` and ``stderr`` say how."""

    def __init__(self, args, rc, stderr):
        self.rc, self.stderr = rc, stderr
        super().__init__("cloudlet %s -> %d: %s" % (" ".join(args), rc, stderr.strip()))


def cloudlet(home, *args, check=True):
    """Run ``cloudlet ARGS`` with ``CLOUDLET_HOME=home``; return the CompletedProcess."""
    env = dict(os.environ, CLOUDLET_HOME=str(home))
    proc = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          env=env, cwd=guest.REPO_DIR)
    if check and proc.returncode:
        raise CliError([str(a) for a in args], proc.returncode, proc.stderr)
    return proc


def make_dir(path):
    """Create ``path`` (and parents) searchable by the QEMU user."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def parse_observation(text):
    """Turn OBSERVE's output into a dict."""
    return dict(line.split("=", 1) for line in text.strip().splitlines() if "=" in line)


class Story:
    """One run of the story under ``root`` with domain names starting with ``prefix``, on
    ``image`` (a :class:`stack.guest.Image`; default: the tiny guest)."""

    def __init__(self, conn, root, prefix=None, image=None):
        self.conn = conn
        self.image = image or guest.tiny()
        self.root = make_dir(os.path.abspath(root))
        self.home = make_dir(os.path.join(self.root, "home"))
        self.prefix = prefix or "cl-%s" % uuid.uuid4().hex[:6]
        self.domains = []

    def name(self, role):
        """The domain name for ``role`` in this run."""
        return "%s-%s" % (self.prefix, role)

    def channel(self, domain, home=None):
        """A ready command channel to the source or a domain made by ``cloudlet``."""
        if domain == self.name("src"):
            sock = os.path.join(self.root, "src", guest.CMD_SOCK)
        else:
            sock = os.path.join(home or self.home, "instances", domain, guest.CMD_SOCK)
        chan = guest.GuestChannel(unix_path=sock)
        chan.wait_ready(60)
        return chan

    def boot_source(self, disk_format="qcow2"):
        """Boot the plain guest and return its domain name. Its disk: a qcow2 over the image's
        disk, or (``"raw"``) a sparse copy of it."""
        name = self.name("src")
        workdir = make_dir(os.path.join(self.root, "src"))
        disk = os.path.join(workdir, "disk." + disk_format)
        image_disk = os.path.join(self.image.directory, "disk.raw")
        if disk_format == "raw":
            subprocess.run(["cp", "--sparse=always", image_disk, disk], check=True)
        else:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            image_disk, disk], check=True)
        self.domains.append(name)
        _dom, chan = guest.boot(self.conn, name, workdir, disk, disk_format, image=self.image)
        chan.close()
        return name

    def create_base(self, source, name="tiny-base"):
        """``cloudlet base create``; return the base id."""
        return cloudlet(self.home, "base", "create", source, "--name", name).stdout.strip()

    def resume(self, base, role="cust"):
        """``cloudlet resume``; return the new domain's name."""
        name = self.name(role)
        self.domains.append(name)
        cloudlet(self.home, "resume", base, "--name", name)
        return name

    def customize(self, domain):
        """Change memory and disk inside ``domain``; return what the guest then reports."""
        with self.channel(domain) as chan:
            chan.run(CUSTOMIZE.format(token=uuid.uuid4().hex), timeout=120)
            return parse_observation(chan.run(OBSERVE))

    def observe(self, domain, home=None):
        """Return what ``domain``'s guest reports (see OBSERVE)."""
        with self.channel(domain, home) as chan:
            return parse_observation(chan.run(OBSERVE))

    def create_overlay(self, domain, path, *extra):
        """``cloudlet overlay create --json``; return its JSON."""
        return json.loads(cloudlet(self.home, "overlay", "create", domain, "-o", path,
                                   "--json", *extra).stdout)

    def synthesize(self, location, role="syn", home=None):
        """``cloudlet synthesis --json``; return ``(domain name, JSON)``."""
        name = self.name(role)
        self.domains.append(name)
        out = cloudlet(home or self.home, "synthesis", location, "--name", name, "--json")
        return name, json.loads(out.stdout)

    def cleanup(self):
        """Destroy every domain this run made and remove its directory."""
        for name in self.domains:
            guest.destroy(self.conn, name)
        shutil.rmtree(self.root, ignore_errors=True)
