#!/usr/bin/python3
"""libvirt qemu hook: put a base's RAM file where QEMU opens the domain's guest RAM.

Installed by ``scripts/setup-host.sh`` (a copy of this file, the standard library only, as
``/etc/libvirt/hooks/cloudlet-ram.py``, run by ``scripts/cloudlet-ram-hook.sh`` at
``HOOK_PATH``). At "prepare begin" libvirt passes the domain XML on stdin; for a
domain whose ``<cloudlet:instance>`` metadata has ``ram-file`` and ``ram-marker``
(``domxml.with_ram_file``) and ``<memoryBacking><source type='file'/>``, it symlinks ``file`` as
``<memory_backing_dir>/<id>-<name[:20]>/pc.ram`` (the path libvirt 9.0 gives QEMU's
``memory-backend-file id=pc.ram``; libvirt removes that directory when the domain stops),
then writes the link's path to the marker file, which tells the engine the hook ran. A symlink,
not a hard link: linking and unlinking would change the file's ctime, which the engine
compares before each use. Anything else: nothing done, exit 0.

It runs as root for every domain anyone defines, so it trusts nothing in the XML: the RAM
file must be a base's (a regular file named ``pc.ram`` beside the base's ``ram.json``
record, writable by its owner only), and the marker may only be written, never through a
symlink, in the directory that holds the domain's disk (the engine's instance directory).
"""

import os
import re
import stat
import sys
import xml.etree.ElementTree as ET

HOOK_PATH = os.environ.get("CLOUDLET_RAM_HOOK", "/etc/libvirt/hooks/qemu.d/cloudlet-ram")
NS = "https://openstackpp.org/xmlns/cloudlet/1"     # = cloudlet_compute.host.domxml.NS
# (and "ram-file", "ram-marker" = domxml.RAM_FILE, RAM_MARKER)
QEMU_CONF = "/etc/libvirt/qemu.conf"
DEFAULT_BACKING_DIR = "/var/lib/libvirt/qemu/ram"
SHORT_NAME_MAX = 20                                   # libvirt's VIR_DOMAIN_SHORT_NAME_MAX
BLOCK = "pc.ram"
RECORD = "ram.json"                                   # beside a base's RAM file (host/ramfile.py)
MARKER_NAME = "ramhook.done"                          # the only file name it writes


def installed():
    """True if the hook is installed where libvirt runs it."""
    return os.access(HOOK_PATH, os.X_OK)


def backing_dir(conf=QEMU_CONF):
    """qemu.conf's ``memory_backing_dir`` (or libvirt's default)."""
    try:
        with open(conf) as f:
            for line in f:
                found = re.match(r'\s*memory_backing_dir\s*=\s*"([^"]+)"', line)
                if found:
                    return found.group(1)
    except OSError:
        pass
    return DEFAULT_BACKING_DIR


def link_path(root, directory):
    """Where QEMU opens the guest RAM of the started domain whose XML is ``root``."""
    name = root.findtext("name") or ""
    return os.path.join(directory, "%s-%s" % (root.get("id"), name[:SHORT_NAME_MAX]), BLOCK)


def _base_ram_file(target):
    """The lstat of ``target`` if it is a base's RAM file, else None."""
    if not target or not os.path.isabs(target) or os.path.basename(target) != BLOCK:
        return None
    try:
        st = os.lstat(target)
        record = os.lstat(os.path.join(os.path.dirname(target), RECORD))
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or not stat.S_ISREG(record.st_mode) or \
            st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return st


def _disk_dirs(root):
    """The directories of the domain's file disks."""
    return {os.path.dirname(os.path.normpath(source.get("file")))
            for source in root.findall("devices/disk/source") if source.get("file")}


def _write_marker(marker, text):
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def prepare(xml, directory):
    """Link the RAM file named in domain ``xml`` into place; return the link or None."""
    root = ET.fromstring(xml)
    node = root.find("metadata/{%s}instance" % NS)
    if node is None or root.get("id") is None or "/" in (root.findtext("name") or "/"):
        return None
    target, marker = node.get("ram-file"), node.get("ram-marker")
    st = _base_ram_file(target)
    if st is None or not marker or os.path.basename(marker) != MARKER_NAME or \
            os.path.dirname(os.path.normpath(marker)) not in _disk_dirs(root):
        return None
    link = link_path(root, directory)
    os.makedirs(os.path.dirname(link), mode=0o700, exist_ok=True)
    os.chown(os.path.dirname(link), st.st_uid, st.st_gid)   # libvirt skips an existing one
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)
    _write_marker(marker, link + "\n")
    return link


def main(argv=None, stdin=None):
    argv = sys.argv if argv is None else argv
    if argv[2:4] != ["prepare", "begin"]:
        return 0
    try:
        prepare((stdin or sys.stdin).read(), backing_dir())
    except (OSError, ET.ParseError) as exc:   # the engine sees no marker and falls back
        print("cloudlet-ram hook: %s" % exc, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
