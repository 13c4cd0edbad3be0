"""Capture stage: the memory image and disk top layer of a running domain, which keeps running.

The domain is saved (QEMU writes its memory image and stops), its qcow2 top layer is
copied while nothing writes to it, and the domain is restored from the same image.
Whatever fails, the domain is restored if it was stopped: a capture never loses a VM.
"""

import logging
import os
import shutil
import time

from cloudlet_compute import domains, domxml
from cloudlet_compute.errors import ConflictError

LOG = logging.getLogger(__name__)


class Capture:
    """What ``capture`` took: paths of the memory image and disk copy, downtime, base id."""

    def __init__(self, memory_path, disk_path, base_id, downtime):
        self.memory_path, self.disk_path = memory_path, disk_path
        self.base_id, self.downtime = base_id, downtime


def capture(conn, name, workdir):
    """Capture domain ``name`` into ``workdir``; return a ``Capture``."""
    dom = domains.lookup(conn, name)
    if not dom.isActive():
        raise ConflictError("domain %s is not running" % name)
    xml = dom.XMLDesc()
    base_id = domxml.base_id_of(xml)
    if base_id is None:
        raise ConflictError("domain %s was not resumed from a base VM (no cloudlet metadata)"
                            % name)
    disk_path, disk_format = domxml.file_disk(xml)
    if disk_format != "qcow2":
        raise ConflictError("domain %s's disk is %s, expected a qcow2 over its base"
                            % (name, disk_format))
    memory_path = os.path.join(workdir, "memory.img")
    disk_copy = os.path.join(workdir, "disk.qcow2")
    start = time.monotonic()
    domains.save(dom, memory_path)
    try:
        shutil.copyfile(disk_path, disk_copy)
    finally:
        domains.restore(conn, memory_path)
    downtime = time.monotonic() - start
    LOG.info("captured %s (down %.2f s)", name, downtime)
    return Capture(memory_path, disk_copy, base_id, downtime)
