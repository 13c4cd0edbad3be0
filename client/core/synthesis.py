"""VM synthesis: a server booted from the base disk image an overlay needs, with
``metadata.overlay_url`` (an overlay at a URL) or ``metadata.overlay_image`` (a VM overlay
image in Glance); nova-compute fetches the overlay and applies it."""

import shutil
import tempfile

from client.core import lookups
from client.core.bases import boot
from client.core.errors import UsageError
from client.core.waiting import DEFAULT_TIMEOUT
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import NotFoundError
from cloudlet_compute.read import overlayinfo


def read_meta(url, workdir=None, policy=None, max_bytes=None):
    """The meta of the overlay at ``url``: one Range request for its tail (scratch space in
    a private directory under ``workdir``, removed again); ``policy`` and ``max_bytes`` as
    for ``cloudlet_compute.read.fetch.open_source``."""
    scratch = tempfile.mkdtemp(prefix="cloudlet-synthesis-", dir=workdir)
    try:
        meta, _size = overlayinfo.info(url, scratch, policy=policy, max_bytes=max_bytes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return meta


def synthesis_metadata(url=None, overlay_image=None):
    """The server metadata that makes a boot from a base disk image a VM synthesis of the
    overlay at ``url`` or of VM overlay image ``overlay_image`` (an id)."""
    if overlay_image is not None:
        return {model.METADATA_OVERLAY_IMAGE: overlay_image}
    return {model.METADATA_OVERLAY_URL: url}


def synthesis(conn, url, name, flavor=None, network="auto", wait=False,
              timeout=DEFAULT_TIMEOUT, workdir=None, overlay_image=None):
    """VM synthesis: a new server from the overlay at ``url`` (or VM overlay image
    ``overlay_image``, name or id) and the base it needs.

    Only the overlay's meta (or the image's record) is read here; nova-compute fetches the
    rest. The base disk image is the active one whose ``base_sha256_uuid`` it names."""
    if (url is None) == (overlay_image is None):
        raise UsageError("synthesis needs an overlay URL or --overlay-image (one of them)")
    if overlay_image is not None:
        image = lookups.find_image(conn, overlay_image, model.OVERLAY)
        base_id = (image.properties or {}).get(model.PROPERTY_BASE_ID)
        overlay, metadata = "image %s" % image.id, synthesis_metadata(overlay_image=image.id)
    else:
        base_id = read_meta(url, workdir)["base_vm_sha256"]
        overlay, metadata = url, synthesis_metadata(url)
    base = lookups.active_base_image(conn, base_id) if base_id else None
    if base is None:
        raise NotFoundError("the overlay %s needs base VM %s, which is not in Glance "
                            "(import it with import-base)" % (overlay, base_id))
    return boot(conn, name, base, lookups.pick_flavor(conn, base, flavor), network,
                metadata, wait, timeout)
