"""VM overlays: images of ``cloudlet_type`` ``cloudlet_overlay``, built by nova's
``cloudlet-overlay-finish`` from a server resumed from a base VM."""

import os

from client.core import lookups, waiting
from client.core.errors import api_errors
from client.core.sessions import server_action
from client.core.transfer import download_image
from client.core.waiting import DEFAULT_TIMEOUT
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import ConflictError
from cloudlet_compute.progress import NullProgress

OVERLAY_ACTION = "cloudlet-overlay-finish"


def overlay_body(name):
    """The ``cloudlet-overlay-finish`` action that builds overlay image ``name``; its
    answer's ``overlay-id`` is the image id."""
    return {OVERLAY_ACTION: {"overlay-name": name}}


def overlay_row(image):
    """An overlay image as a plain dict (what the command lines print)."""
    props = image.properties or {}
    return {"id": image.id, "name": image.name, "status": image.status, "size": image.size,
            "base_id": props.get(model.PROPERTY_BASE_ID),
            "instance_uuid": props.get("instance_uuid")}


def list_overlays(conn):
    """The VM overlay images visible to the user."""
    return [overlay_row(i) for i in lookups.images_of_type(conn, model.OVERLAY)]


def create_overlay(conn, server_ref, name, wait=False, timeout=DEFAULT_TIMEOUT):
    """Build the VM overlay of server ``server_ref`` (action ``cloudlet-overlay-finish``)."""
    server = lookups.find_server(conn, server_ref)
    answer = server_action(conn, server.id, overlay_body(name))
    if wait:
        try:
            waiting.wait_task(conn, server.id, [answer["overlay-id"]], timeout)
        except BaseException:
            waiting.delete_images(conn, [answer["overlay-id"]])
            raise
        with api_errors():
            answer["size"] = conn.image.get_image(answer["overlay-id"]).size
    return answer


def download(conn, ref, path, progress_factory=NullProgress):
    """Save VM overlay image ``ref`` as ``path`` (through ``path.part``; checked)."""
    image = lookups.find_image(conn, ref, model.OVERLAY)
    if image.status != "active":
        raise ConflictError("VM overlay image %s is %s, not active" % (image.id, image.status))
    part = path + ".part"
    try:
        progress = progress_factory("downloading", image.size)
        download_image(conn, image, part, progress)
        progress.finish()
        os.replace(part, path)
    except BaseException:
        if os.path.exists(part):
            os.unlink(part)
        raise
    return {"id": image.id, "file": path, "size": os.path.getsize(path)}
