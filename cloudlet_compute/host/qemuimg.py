"""Thin wrappers around ``qemu-img``: create, map and convert disk images."""

import json
import subprocess

from cloudlet_compute.errors import HypervisorError


def _run(args):
    try:
        proc = subprocess.run(["qemu-img"] + args, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise HypervisorError("qemu-img is not installed") from None
    if proc.returncode:
        raise HypervisorError("qemu-img %s failed: %s"
                              % (args[0], proc.stderr.strip().splitlines()[-1:] or "?"))
    return proc.stdout


def create_overlay(path, backing, backing_format="raw"):
    """Create a qcow2 image at ``path`` whose backing file is ``backing``."""
    _run(["create", "-q", "-f", "qcow2", "-F", backing_format, "-b", backing, path])


def allocated_extents(path):
    """Return ``[(offset, length, zero, host_offset)]`` of the extents that ``path`` itself
    (depth 0, not a backing file) defines: data it holds, or ranges it reads as zeros."""
    extents = []
    for ext in json.loads(_run(["map", "-U", "--output=json", "-f", "qcow2", path])):
        if ext["depth"] != 0 or not (ext["data"] or ext["zero"]):
            continue
        extents.append((ext["start"], ext["length"], not ext["data"], ext.get("offset")))
    return extents


def convert_to_raw(src, dst):
    """Write the full content of image ``src`` (any format) to a sparse raw file ``dst``."""
    _run(["convert", "-U", "-O", "raw", src, dst])


def backing_chain(path, fmt):
    """``qemu-img info --backing-chain`` of image ``path`` (format ``fmt``), which a running
    QEMU may hold: one dict per layer, ``path`` first."""
    return json.loads(_run(["info", "-U", "--backing-chain", "--output=json", "-f", fmt, path]))


def rebase_unsafe(path, backing, backing_format):
    """Point qcow2 ``path`` at ``backing`` without touching its data (metadata only)."""
    _run(["rebase", "-u", "-f", "qcow2", "-F", backing_format, "-b", backing, path])


def dirty_extents(socket_path, export, bitmap):
    """``[(offset, length)]`` that dirty bitmap ``bitmap`` marks in NBD export ``export``
    on unix socket ``socket_path`` (QEMU reports dirty ranges as holes in this view)."""
    opts = ("driver=nbd,server.type=unix,server.path=%s,export=%s,"
            "x-dirty-bitmap=qemu:dirty-bitmap:%s" % (socket_path, export, bitmap))
    return [(ext["start"], ext["length"])
            for ext in json.loads(_run(["map", "--output=json", "--image-opts", opts]))
            if not ext["data"]]
