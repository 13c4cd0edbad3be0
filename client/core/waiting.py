"""Waiting for servers and images, progress on stderr, and deleting what a failed or
interrupted step leaves behind.

The loops read ``POLL_INTERVAL`` and ``TASK_GRACE`` from this module when they run (tests
set them)."""

import logging
import sys
import time

from client.core.errors import ApiError, api_errors
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import FetchError
from cloudlet_compute.progress import Progress

LOG = logging.getLogger(__name__)
POLL_INTERVAL = 1.0
DEFAULT_TIMEOUT = 600
# How long images may stay unfinished once the server has no task any more.
TASK_GRACE = 30


def progress_bar(label, total, unit="B"):
    """A progress bar on stderr (drawn on a terminal only)."""
    return Progress(label, total, unit)


def say(text):
    """Report a state change on stderr."""
    print(text, file=sys.stderr, flush=True)


def wait_server_active(conn, server_id, timeout=DEFAULT_TIMEOUT, report=say):
    """Wait for ACTIVE, reporting status/task_state changes; raise with the fault on ERROR."""
    deadline, seen = time.monotonic() + timeout, None
    while True:
        with api_errors():
            server = conn.compute.get_server(server_id)
        state = (server.status, server.task_state)
        if state != seen:
            seen = state
            report("server %s: %s%s" % (server.name, server.status,
                                        " (%s)" % server.task_state if server.task_state else ""))
        if server.status == "ACTIVE" and not server.task_state:
            return server
        if server.status == "ERROR":
            fault = (server.fault or {}).get("message", "no fault recorded")
            raise ApiError("server %s went to ERROR: %s" % (server.name, " ".join(fault.split())))
        if time.monotonic() > deadline:
            raise ApiError("server %s is still %s after %d s" % (server.name, server.status,
                                                                timeout))
        time.sleep(POLL_INTERVAL)


def recorded_failure(conn, server_id):
    """Why the server's last cloudlet action failed, as nova-compute recorded it in its
    metadata (one line), or None."""
    with api_errors():
        resp = conn.compute.get("/servers/%s/metadata/%s"
                                % (server_id, model.METADATA_TASK_ERROR), raise_exc=False)
    reason = resp.json().get("meta", {}).get(model.METADATA_TASK_ERROR) \
        if resp.status_code == 200 else None
    return " ".join(reason.split()) if reason else None


def wait_task(conn, server_id, image_ids, timeout=DEFAULT_TIMEOUT, report=say):
    """Wait until the server's cloudlet task is over and every image is active."""
    deadline, seen, idle_since = time.monotonic() + timeout, None, None
    while True:
        with api_errors():
            server = conn.compute.get_server(server_id)
            images = {i: conn.image.find_image(i, ignore_missing=True) for i in image_ids}
        if server.task_state != seen:
            seen = server.task_state
            report("server %s: %s" % (server.name, seen or "no task"))
        statuses = {i: image.status if image else "deleted" for i, image in images.items()}
        if all(s == "active" for s in statuses.values()) and not server.task_state:
            return server
        # The API deletes the records when the task fails; an idle server whose images
        # stay unfinished also means the task is gone.
        failed = [i for i, s in statuses.items() if s in ("killed", "deleted", "deactivated")]
        idle_since = (idle_since or time.monotonic()) if not server.task_state else None
        if failed or (idle_since and time.monotonic() - idle_since > TASK_GRACE):
            image_id = (failed or list(statuses))[0]
            reason = recorded_failure(conn, server_id) if not server.task_state else None
            raise ApiError("the task on server %s failed: %s" % (
                server.name, reason or "image %s is %s" % (image_id, statuses[image_id])))
        if time.monotonic() > deadline:
            raise ApiError("server %s: task %s not done after %d s"
                           % (server.name, server.task_state, timeout))
        time.sleep(POLL_INTERVAL)


def wait_image_active(conn, image_id, timeout=DEFAULT_TIMEOUT):
    """Wait until image ``image_id`` is active; raise ``FetchError`` if it fails or times out."""
    deadline = time.monotonic() + timeout
    while True:
        image = conn.image.get_image(image_id)
        if image.status == "active":
            return image
        if image.status in ("killed", "deleted", "deactivated") or time.monotonic() > deadline:
            raise FetchError("image %s is %s, not active" % (image_id, image.status))
        time.sleep(POLL_INTERVAL)


def delete_images(conn, image_ids):
    """Delete images, best effort (the error that made this necessary matters more)."""
    for image_id in image_ids:
        try:
            conn.image.delete_image(image_id, ignore_missing=True)
            LOG.info("deleted image %s", image_id)
        except Exception as exc:  # noqa: BLE001 - best effort: the first error matters more
            LOG.warning("could not delete image %s: %s", image_id, exc)


def delete_server(conn, server_id):
    """Delete a server, best effort."""
    try:
        conn.compute.delete_server(server_id, ignore_missing=True)
        LOG.info("deleted server %s", server_id)
    except Exception as exc:  # noqa: BLE001
        LOG.warning("could not delete server %s: %s", server_id, exc)
