"""Faults injected into the real parts, through Nova on the embedded stack (issue 16 item 5).

One server resumed from the base and customized (``prepared``) is the source of every
overlay creation and, through the overlay image made from it, of every synthesis. Each case
checks its outcome (the server in ERROR with a one-line fault naming no host path, or the
work done or recovered), that the prepared server still runs with its memory and disk, and
that nothing is left: no domain, instance directory or port without a server, no qemu-nbd,
no scratch entry in nova-compute's cloudlet cache (``tests.support.faults.leftovers``);
then that nova-compute still works (a pause and unpause of the prepared server).

Mid-operation points are observed, never slept for: the test's HTTP server holding the
overlay stream (synthesis), a scratch directory appearing in the cache (overlay capture),
the server's task_state (before the upload).
"""

import os
import re
import uuid

import pytest

from cloudlet_compute import imagemodel as model
from cloudlet_compute.progress import NullProgress
from cloudlet_compute.read import fetch
from stack.httpserve import FileServer
from tests.compute.test_story import assert_same_guest
from tests.conftest import scratch_root
from tests.support import cloud, faults

OVERLAY = "overlay.zip"
MID = 1 << 20       # bytes of the overlay's blob stream served before a hold or a cut
HOST_PATH = re.compile(r"(?<![\w:/.])/[\w.-]+/")


class Prepared:
    """The customized source server, what its guest reported, and a directory holding its
    overlay (``OVERLAY``) for the test's HTTP servers."""

    def __init__(self, story, server_id, expected):
        self.story, self.server_id, self.expected = story, server_id, expected
        self.served = story.scratch
        self.faults_before = 0      # faults of the server before the last overlay creation


@pytest.fixture(scope="module")
def prepared(clouds, base_images):
    story = cloud.NovaStory(*clouds)
    story.scratch = scratch_root("e2e-faults")
    try:
        server = story.boot("src", base_images[model.BASE_DISK])
        expected = story.customize(server.id)
        story.download(story.overlay_finish(server.id), os.path.join(story.scratch, OVERLAY))
        yield Prepared(story, server.id, expected)
    finally:
        story.cleanup()


@pytest.fixture(scope="module")
def provider_net(clouds):
    demo, _ = clouds
    return demo.network.find_network(cloud.stack.cloud("a").provider_network,
                                     ignore_missing=False)


# --- checks ----------------------------------------------------------------------------
def assert_one_line(message):
    """A fault a user may read: one line, no traceback, no path on a host."""
    assert message and "\n" not in message and "Traceback" not in message, message
    assert not HOST_PATH.search(message), message


def assert_clean(admin):
    left = faults.nothing_left(admin)
    assert not any(left.values()), left


def assert_source_intact(demo, prepared):
    """The prepared server is ACTIVE, idle, running, with the memory and disk it had."""
    server = demo.compute.get_server(prepared.server_id)
    assert (server.status, server.task_state, server.power_state) == ("ACTIVE", None, 1), \
        (server.status, server.task_state, server.power_state)
    assert_same_guest(prepared.expected, prepared.story.observe(prepared.server_id))


def assert_compute_works(demo, prepared):
    """nova-compute still acts on the prepared server (pause, unpause), which kept its guest."""
    server = demo.compute.get_server(prepared.server_id)
    demo.compute.pause_server(server)
    demo.compute.wait_for_server(server, status="PAUSED", failures=["ERROR"], wait=120)
    demo.compute.unpause_server(server)
    demo.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], wait=120)
    assert_source_intact(demo, prepared)


def error_fault(demo, server):
    """The server, once ERROR: its fault message as its (non-admin) owner reads it."""
    server = demo.compute.wait_for_server(server, status="ERROR", failures=["ACTIVE"], wait=300)
    fault = server.fault or {}
    assert "details" not in fault or "Traceback" not in fault["details"], fault
    assert_one_line(fault.get("message"))
    return fault["message"]


def create(demo, prepared, image_id, overlay_url=None, networks="none"):
    """POST /servers (not waited for); the server is deleted with the story."""
    metadata = {model.METADATA_OVERLAY_URL: overlay_url} if overlay_url else {}
    server = demo.compute.create_server(
        name="%s-%s" % (prepared.story.tag, uuid.uuid4().hex[:4]), image_id=image_id,
        flavor_id=prepared.story.flavor.id, networks=networks, metadata=metadata)
    prepared.story.servers.append(server.id)
    return server


def start_overlay(demo, prepared, until=None):
    """cloudlet-overlay-finish of the prepared server, waited for only until its task state
    is ``until`` (if given); its image id."""
    prepared.faults_before = len(faults.fault_messages(prepared.server_id))
    resp = cloud.server_action(demo, prepared.server_id, {"cloudlet-overlay-finish": {
        "overlay-name": "%s-ov-%s" % (prepared.story.tag, uuid.uuid4().hex[:4])}})
    assert resp.status_code == 202, resp.text
    assert user_reason(demo, prepared) is None        # a new action forgets the last failure
    prepared.story.images.append(resp.json()["overlay-id"])
    if until:
        cloud.wait_for(lambda: task_state(demo, prepared) == until, 120,
                       "the prepared server's task state %s" % until, interval=0.1)
    return resp.json()["overlay-id"]


def new_faults(prepared):
    """The faults recorded since the last overlay creation on the prepared server began."""
    return faults.fault_messages(prepared.server_id)[prepared.faults_before:]


def action_fault(demo, prepared):
    """The one fault the last overlay creation on the prepared server recorded (one line),
    which its (non-admin) owner reads in the server's metadata; the instance action says
    Error."""
    new = new_faults(prepared)
    assert len(new) == 1, new
    assert_one_line(new[0])
    assert user_reason(demo, prepared) == new[0]
    action = demo.compute.get("/servers/%s/os-instance-actions" % prepared.server_id).json()
    latest = max(action["instanceActions"], key=lambda a: a["start_time"])
    assert (latest["action"], latest["message"]) == ("cloudlet-overlay-finish", "Error"), latest
    return new[0]


def user_reason(demo, prepared):
    """Why the prepared server's last cloudlet action failed, as its owner reads it."""
    metadata = demo.compute.get_server_metadata(prepared.server_id).metadata
    return metadata.get(model.METADATA_TASK_ERROR)


def task_state(demo, prepared):
    return demo.compute.get_server(prepared.server_id).task_state


def settled(demo, prepared):
    """Wait until the prepared server has no task."""
    cloud.wait_for(lambda: task_state(demo, prepared) is None, 300,
                   "the prepared server to finish its task", interval=0.3)


def image_gone(demo, image_id, timeout=60):
    cloud.wait_for(lambda: demo.image.find_image(image_id) is None, timeout,
                   "image %s to be deleted" % image_id, interval=0.5)


# --- the engine's fetch: a broken ranged stream is resumed, a bounded number of times ----
def test_ranged_stream_resumes_where_it_broke(tmp_path):
    data = os.urandom(3 * MID + 12345)
    (tmp_path / OVERLAY).write_bytes(data)
    with FileServer(str(tmp_path), cut_after=MID, cuts=2) as server:
        source, _ = fetch.open_source(server.url(OVERLAY), str(tmp_path), NullProgress("", None))
        assert b"".join(source.stream(0, len(data))) == data
        ranges = [r for _, r in server.requests]
    assert ranges[1:] == ["bytes=0-%d" % (len(data) - 1), "bytes=%d-%d" % (MID, len(data) - 1),
                          "bytes=%d-%d" % (2 * MID, len(data) - 1)]


def test_ranged_stream_gives_up_after_its_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "RESUME_DELAY", 0.01)
    data = os.urandom(8 * MID)
    (tmp_path / OVERLAY).write_bytes(data)
    with FileServer(str(tmp_path), cut_after=MID) as server:
        source, _ = fetch.open_source(server.url(OVERLAY), str(tmp_path), NullProgress("", None))
        with pytest.raises(fetch.FetchError, match="gave up after 3 resumes"):
            b"".join(source.stream(0, len(data)))
        assert len(server.requests) == 1 + 1 + fetch.RESUMES


# --- e: the overlay server cut off mid-download ------------------------------------------
def test_overlay_server_cut_mid_download_is_resumed(clouds, base_images, prepared):
    demo, admin = clouds
    with FileServer(prepared.served, cut_after=MID, cuts=1) as server:
        pending = create(demo, prepared, base_images[model.BASE_DISK], server.url(OVERLAY))
        synthesized = demo.compute.wait_for_server(pending, failures=["ERROR"], wait=300)
        starts = [int(r[6:].split("-")[0]) for _, r in server.requests
                  if r and not r.startswith("bytes=-")]
    assert server.cuts == 0, server.requests                      # it was cut once...
    assert any(b - a == MID for a, b in zip(starts, starts[1:])), server.requests  # ...resumed
    assert_same_guest(prepared.expected, prepared.story.observe(synthesized.id))
    cloud.delete_server(demo, synthesized.id)
    assert_clean(admin)


def test_overlay_server_cut_without_ranges_fails_cleanly(clouds, base_images, prepared,
                                                          provider_net):
    demo, admin = clouds
    with FileServer(prepared.served, no_ranges=True, cut_after=MID) as server:
        failed = create(demo, prepared, base_images[model.BASE_DISK], server.url(OVERLAY),
                        networks=[{"uuid": provider_net.id}])
        message = error_fault(demo, failed)
    assert "VM synthesis (fetching" in message and "closed after" in message, message
    assert_clean(admin)     # nova removed the failed build's port already
    cloud.delete_server(demo, failed.id)
    assert_clean(admin)


# --- d: the cloudlet cache full (a small tmpfs over it) ----------------------------------
def test_cache_full_during_synthesis(clouds, base_images, prepared):
    demo, admin = clouds
    with faults.tmpfs_over(faults.scratch_dir(), "2m"), \
            FileServer(prepared.served, no_ranges=True) as server:   # downloaded whole
        failed = create(demo, prepared, base_images[model.BASE_DISK], server.url(OVERLAY))
        message = error_fault(demo, failed)
        assert "No space left on device" in message, message
        assert_clean(admin)
    cloud.delete_server(demo, failed.id)
    assert_clean(admin)


def test_cache_full_during_base_caching(clouds, base_images, prepared):
    demo, admin = clouds
    with faults.tmpfs_over(faults.cache_dir(), "24m") as cache:   # the base is not in it
        failed = create(demo, prepared, base_images[model.BASE_DISK])
        message = error_fault(demo, failed)
        assert "resume of base VM failed" in message, message
        assert "No space left on device" in message, message
        assert faults.entries(cache) == ["bases", "tmp"]
        assert_clean(admin)
    cloud.delete_server(demo, failed.id)
    assert_clean(admin)


def test_cache_full_during_overlay_creation(clouds, prepared):
    demo, admin = clouds
    with faults.tmpfs_over(faults.scratch_dir(), "8m"):
        overlay_id = start_overlay(demo, prepared)
        settled(demo, prepared)
        image_gone(demo, overlay_id)
        message = action_fault(demo, prepared)
        assert "No space left on device" in message, message
        assert_clean(admin)
    assert_source_intact(demo, prepared)


# --- f: Glance down during the overlay upload --------------------------------------------
def test_glance_down_during_overlay_upload(clouds, prepared):
    demo, admin = clouds
    overlay_id = start_overlay(demo, prepared, until="image_pending_upload")
    with faults.stopped("glance") as down:
        # Frozen before the upload starts: the upload connects, then Glance dies under it.
        cloud.wait_for(lambda: task_state(demo, prepared) != "image_pending_upload", 300,
                       "the overlay upload to start", interval=0.1)
        down()
        settled(demo, prepared)
    message = action_fault(demo, prepared)
    assert message == ("Cloudlet cloudlet-overlay-finish failed: the image service cannot be "
                       "reached; nothing was stored"), message
    image_gone(demo, overlay_id)    # deleted once Glance is back
    assert_clean(admin)
    assert_compute_works(demo, prepared)


# --- c: RabbitMQ restarted during an overlay creation ------------------------------------
def test_rabbitmq_restarted_during_overlay_creation(clouds, prepared):
    demo, admin = clouds
    overlay_id = start_overlay(demo, prepared, until="image_pending_upload")
    faults.restart_rabbitmq()
    settled(demo, prepared)
    image = cloud.wait_for(lambda: _finished(demo, overlay_id), 120,
                           "image %s to be active or deleted" % overlay_id)
    if image == "deleted":      # failed cleanly: with a reason
        action_fault(demo, prepared)
    else:
        assert new_faults(prepared) == []
    assert_clean(admin)
    assert_compute_works(demo, prepared)


def _finished(demo, image_id):
    image = demo.image.find_image(image_id)
    if image is None:
        return "deleted"
    return image.status if image.status == "active" else None


# --- b and a: nova-compute SIGKILLed mid-operation, then restarted -----------------------
def test_compute_killed_mid_overlay_creation_keeps_the_vm(clouds, prepared):
    demo, admin = clouds
    overlay_id = start_overlay(demo, prepared)
    # A file inside the engine's scratch directory: the capture is writing.
    cloud.wait_for(lambda: any(os.sep in e for e in faults.entries(faults.scratch_dir())),
                   120, "the overlay capture to start", interval=0.02)
    faults.kill("nova-compute")
    faults.restart_compute(admin)
    image_gone(demo, overlay_id)
    settled(demo, prepared)
    assert_source_intact(demo, prepared)
    assert_clean(admin)
    assert_compute_works(demo, prepared)


def test_compute_killed_mid_synthesis_ends_in_error(clouds, base_images, prepared,
                                                    provider_net):
    demo, admin = clouds
    with FileServer(prepared.served, hold_after=MID) as server:
        pending = create(demo, prepared, base_images[model.BASE_DISK], server.url(OVERLAY),
                         networks=[{"uuid": provider_net.id}])
        try:
            cloud.wait_for(server.held.is_set, 300, "nova-compute to be mid-download",
                           interval=0.1)
            faults.kill("nova-compute")
        finally:
            server.release.set()
    faults.restart_compute(admin)
    message = error_fault(demo, pending)
    assert "Build interrupted" in message, message
    instance = admin.compute.get_server(pending.id).instance_name
    assert instance not in faults.stack_domains()
    assert_clean(admin)
    cloud.delete_server(demo, pending.id)
    assert_clean(admin)      # its port went with it
    assert_compute_works(demo, prepared)
