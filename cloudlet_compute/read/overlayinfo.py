"""An overlay's meta and size, read from a path or URL without rebuilding the VM.

Imports nothing that imports libvirt (``tests/compute/test_format.py`` checks it), so that
``cloudlet-client`` and the Horizon panel read an overlay's meta without loading libvirt.
"""

import os

from cloudlet_compute.format.package import Package
from cloudlet_compute.progress import NullProgress
from cloudlet_compute.read.fetch import open_source


def info(location, workdir, policy=None, max_bytes=None):
    """Return the meta of the overlay at ``location`` (path or URL) and its size.

    ``policy`` and ``max_bytes``: as for ``fetch.open_source``."""
    source, temp = open_source(location, workdir, NullProgress(), policy=policy,
                               max_bytes=max_bytes)
    try:
        package = Package(source)
        return package.meta, source.size
    finally:
        source.close()
        if temp:
            os.unlink(temp)
