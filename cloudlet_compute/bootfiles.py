"""Kernel, initrd and command line of a base VM made from a direct-kernel-boot domain.

Such a domain (``<os><kernel>``, optionally ``<initrd>`` and ``<cmdline>``) needs its kernel
wherever its memory image is restored. Its base keeps read-only copies in the base directory
(``kernel``, ``initrd``) and records them in ``base.json`` with the same keys a base
package's manifest has: ``kernel_size``, ``kernel_sha256``, ``initrd_size``,
``initrd_sha256`` and ``cmdline``; a base package carries the two files as optional members.
Bases of domains that boot from their disk have none of these.
"""

import hashlib
import os
import re
import shutil

from cloudlet_compute.errors import FormatError, NotFoundError
from cloudlet_compute.host import domxml

MEMBERS = ("kernel", "initrd")
MAX_FILE_SIZE = 1 << 30
MAX_CMDLINE = 4096
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}\Z")


class BootFiles:
    """The files (``{member: path}``) and command line to register with a base VM."""

    def __init__(self, paths, cmdline=None):
        self.paths, self.cmdline = dict(paths), cmdline


def copy_from_domain(xml, work):
    """BootFiles with copies in ``work`` of what domain ``xml`` boots, or None if it boots
    from its disk."""
    found = domxml.boot_files(xml)
    if not found["kernel"]:
        return None
    paths = {}
    for member in MEMBERS:
        if found[member]:
            paths[member] = os.path.join(work, member)
            try:
                shutil.copyfile(found[member], paths[member])
            except OSError as exc:
                raise NotFoundError("the domain's %s %s cannot be read: %s"
                                    % (member, os.path.basename(found[member]),
                                       exc.strerror)) from None
    return BootFiles(paths, found["cmdline"])


def sha256_of(path):
    """SHA-256 hex of the file at ``path``."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def describe(boot):
    """The manifest keys of ``boot`` (sizes, SHA-256, command line); {} for None."""
    if boot is None:
        return {}
    fields = {}
    for member, path in boot.paths.items():
        fields[member + "_size"] = os.path.getsize(path)
        fields[member + "_sha256"] = sha256_of(path)
    if boot.cmdline is not None:
        fields["cmdline"] = boot.cmdline
    return fields


def hashed_keys(manifest):
    """The size and hash keys ``manifest`` has about boot files."""
    return [member + suffix for member in MEMBERS for suffix in ("_size", "_sha256")
            if member + suffix in manifest]


def install(boot, build):
    """Move ``boot``'s files into the base directory ``build``, read-only."""
    for member, path in (boot.paths.items() if boot else ()):
        dest = os.path.join(build, member)
        shutil.move(path, dest)
        os.chmod(dest, 0o444)


def paths_of(base_dir, manifest):
    """``{member: path}`` of the boot files a registered base has."""
    return {member: os.path.join(base_dir, member) for member in MEMBERS
            if member + "_sha256" in manifest}


def package_members(zf, manifest, where):
    """Check what package manifest ``manifest`` says about boot files against the zip
    ``zf``; return the boot members it holds."""
    declared = [m for m in MEMBERS if m + "_size" in manifest or m + "_sha256" in manifest]
    held = [m for m in MEMBERS if m in zf.namelist()]
    if declared != held:
        raise FormatError("base package %s: its manifest describes %s, it holds %s"
                          % (where, " and ".join(declared) or "no boot files",
                             " and ".join(held) or "none"))
    if declared and "kernel" not in declared:
        raise FormatError("base package %s has an initrd but no kernel" % where)
    for member in declared:
        size, digest = manifest.get(member + "_size"), manifest.get(member + "_sha256")
        if not isinstance(size, int) or isinstance(size, bool) or \
                not 0 < size <= MAX_FILE_SIZE:
            raise FormatError("base package %s: manifest %s_size %r is not a size up to %d"
                              % (where, member, size, MAX_FILE_SIZE))
        if not isinstance(digest, str) or not SHA256_PATTERN.match(digest):
            raise FormatError("base package %s: manifest %s_sha256 is not a sha256 digest"
                              % (where, member))
        if zf.getinfo(member).file_size != size:
            raise FormatError("base package %s: %s is %d bytes, the manifest says %d"
                              % (where, member, zf.getinfo(member).file_size, size))
    cmdline = manifest.get("cmdline")
    if cmdline is not None and (not declared or not isinstance(cmdline, str) or
                                len(cmdline) > MAX_CMDLINE or
                                any(ord(c) < 32 for c in cmdline)):
        raise FormatError("base package %s: manifest cmdline is not a kernel command line "
                          "(one line of up to %d characters, with a kernel)"
                          % (where, MAX_CMDLINE))
    return declared
