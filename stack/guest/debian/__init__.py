"""The Debian 12 test guest: systemd, a real kernel and initrd, apps staged as .debs.

Built by ``stack/guest/debian/build.sh`` (mmdebstrap; ~1.5-2 min, needs the Debian mirror)
into a cache outside the clone, keyed by the builder's files::

    ${CLOUDLET_GUEST_CACHE:-/var/cache/openstackpp/guests}/debian-<key>/
        disk.raw  vmlinuz  initrd.img  cmdline  kernel-version  packages.txt

``<key>`` is the start of the SHA-256 of the builder's files (this directory's build.sh,
hooks.sh and rootfs/, and the tiny guest's init.sh, whose command loop the guest runs), so a
change of any of them builds a new guest and a fresh clone reuses the one already there.

Inside the guest: systemd as PID 1; ``cltest-channel.service`` speaks
:class:`stack.guest.GuestChannel`'s protocol on ttyS1; ``cltest-counter.service`` counts
seconds in its memory (``tick N`` on the console and in ``/run/tick``); systemd-networkd runs
DHCP on any Ethernet NIC; root logs in on ttyS0 without a password; the .debs of each staged
app (:data:`APPS`) are in ``/opt/cltest/debs/<app>/``, enough for ``dpkg -i`` offline.
"""

import hashlib
import os
import subprocess
from pathlib import Path

from stack.guest.guest import ZERO_FREED_PAGES, Image

HERE = Path(__file__).resolve().parent
BUILD_SH = HERE / "build.sh"
BUILDER_FILES = (HERE / "build.sh", HERE / "hooks.sh", HERE / "rootfs", HERE.parent / "init.sh")
DEFAULT_CACHE = "/var/cache/openstackpp/guests"
APPS = ("nginx-light", "python3-numpy")
DEBS_DIR = "/opt/cltest/debs"          # in the guest: DEBS_DIR/<app>/*.deb
MEMORY_MIB = 1024
BOOT_TIMEOUT = 300                      # 27-40 s under TCG, 83 s seen on a loaded host


def cache_root() -> Path:
    """Where built guests are kept: ``$CLOUDLET_GUEST_CACHE`` or :data:`DEFAULT_CACHE`."""
    return Path(os.environ.get("CLOUDLET_GUEST_CACHE") or DEFAULT_CACHE)


def _files():
    for top in BUILDER_FILES:
        if top.is_dir():
            yield from sorted(p for p in top.rglob("*") if p.is_file())
        else:
            yield top


def builder_key() -> str:
    """A hash of the builder's files: names (relative to stack/guest), modes and contents."""
    h = hashlib.sha256()
    for path in _files():
        h.update(str(path.relative_to(HERE.parent)).encode() + b"\0")
        h.update(b"x" if os.access(path, os.X_OK) else b"-")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def guest_dir() -> Path:
    """The cache directory of the guest the current builder files make (built or not)."""
    return cache_root() / ("debian-%s" % builder_key())


def ensure_built() -> Path:
    """Build the guest unless it is in the cache; return its directory. Raises
    ``subprocess.CalledProcessError`` if the build fails."""
    out = guest_dir()
    if not (out / "disk.raw").is_file():
        subprocess.run([str(BUILD_SH), str(out)], check=True)
    return out


def image() -> Image:
    """The built guest (built now if needed) as a :class:`stack.guest.Image`, 1 GiB of RAM,
    booted with its own command line plus :data:`ZERO_FREED_PAGES` (added here, not in
    build.sh: a build takes minutes and the mirror, and direct boot lets us pass it)."""
    out = ensure_built()
    cmdline = "%s %s" % ((out / "cmdline").read_text().strip(), ZERO_FREED_PAGES)
    return Image(out, cmdline=cmdline, memory_mib=MEMORY_MIB, boot_timeout=BOOT_TIMEOUT)
