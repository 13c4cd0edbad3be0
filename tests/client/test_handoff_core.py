"""VM handoff in ``client.core.handoff`` on fake clouds: the ``cloudlet-handoff`` action,
waiting for its outcome and the failure's reason, and the residue image."""

import pytest

from client.core import errors, handoff, waiting
from cloudlet_compute.errors import ConflictError, NotFoundError
from tests.client.handoff_fakes import fast  # noqa: F401 (autouse fixture)
from tests.client.handoff_fakes import (DEST_URL, MOVED, REQ, SRC, TOKEN, Recorder, destination,
                                        failed_action, server, source)


def test_handoff_posts_dest_token_and_compute_endpoint():
    conn, dest = source([server()]), destination()

    out = handoff.handoff(conn, "vm1", dest, "vm1-moved")

    assert out == {"server": SRC, "handoff": DEST_URL, "dest_vmname": "vm1-moved"}
    assert conn.compute.posts == [("/servers/%s/action" % SRC, {"cloudlet-handoff": {
        "handoff_url": DEST_URL, "dest_token": TOKEN, "dest_vmname": "vm1-moved"}})]
    assert dest.endpoint_calls == [("compute", "public")]


def test_handoff_dest_vmname_defaults_to_the_source_name():
    conn = source([server()])
    handoff.handoff(conn, "vm1", destination())
    assert conn.compute.posts[0][1]["cloudlet-handoff"]["dest_vmname"] == "vm1"


def test_handoff_wait_success_reports_the_destination_server():
    states = [server("MIGRATING", "migrating", 10), server("MIGRATING", "migrating", 60),
              server("MIGRATING", "migrating", 100), None]
    conn = source(states)
    other = server(sid="dest-0", name="vm1-moved")          # same name, not from SRC
    dest = destination([other, MOVED])
    bars, said = Recorder(), []

    out = handoff.handoff(conn, "vm1", dest, "vm1-moved", wait=True, progress_factory=bars,
                          report=said.append)

    assert out == {"id": "dest-1", "name": "vm1-moved", "status": "ACTIVE",
                   handoff.HANDOFF_FROM: SRC}
    assert [(b.label, b.total, b.unit, b.done) for b in bars.bars] == \
        [("handing off", 100, "%", 100)]
    assert said == ["server vm1: migrating"]


def test_handoff_wait_waits_for_the_destination_to_be_active():
    conn = source([server("MIGRATING", "migrating", 50), None])
    bars = Recorder()
    building = server("BUILD", "spawning", sid="dest-1", name="vm1",
                      metadata={handoff.HANDOFF_FROM: SRC})
    dest = destination([building])
    states = [building, server(sid="dest-1", name="vm1")]
    dest.compute.get_server = lambda sid: states.pop(0) if len(states) > 1 else states[0]

    out = handoff.handoff(conn, "vm1", dest, wait=True, progress_factory=bars,
                          report=lambda text: None)

    assert out["status"] == "ACTIVE" and out["id"] == "dest-1"
    assert bars.bars[0].done == 100     # the source is gone: the bar is full


def test_handoff_wait_failure_has_the_reason_from_the_instance_action():
    reason = "the destination has no base VM " + "b" * 64
    conn = source([server("MIGRATING", "migrating", 20), server()],
                  **failed_action(reason))

    with pytest.raises(errors.ApiError) as exc:
        handoff.handoff(conn, "vm1", destination(), wait=True, report=lambda text: None)

    assert str(exc.value) == "handoff of server vm1 failed: %s" % reason
    # The action of this request, read with the microversion that shows event details
    # (which say why: the metadata is not read then).
    assert conn.compute.gets[-1] == ("/servers/%s/os-instance-actions/%s" % (SRC, REQ),
                                     "2.84")


def test_handoff_failure_reason_is_one_line_and_falls_back_to_the_latest_action():
    failed = failed_action("no flavor\n  fits base VM", request_id="req-older")
    conn = source([server()], **failed)
    assert handoff.handoff_failure(conn, SRC, REQ) == "no flavor fits base VM"
    assert handoff.handoff_failure(source([server()]), SRC, REQ) is None


def test_handoff_wait_failure_waits_for_the_event(monkeypatch):
    # The task is reset before the event is written: poll again until it is there.
    failed = failed_action("destination refused")
    conn = source([server("MIGRATING", "migrating", 5), server()], **failed)
    events = failed["details"][REQ]["events"]
    saved = list(events)
    events.clear()
    original = conn.compute.get

    def get(path, microversion=None, raise_exc=True):
        if len(conn.compute.gets) >= 4:
            events[:] = saved
        return original(path, microversion, raise_exc)
    conn.compute.get = get

    with pytest.raises(errors.ApiError, match="failed: destination refused$"):
        handoff.handoff(conn, "vm1", destination(), wait=True, report=lambda text: None)


def test_handoff_wait_gives_up_when_nothing_happens(monkeypatch):
    monkeypatch.setattr(waiting, "TASK_GRACE", -1)
    conn = source([server()])
    with pytest.raises(errors.ApiError, match="ended, but the server is still here"):
        handoff.handoff(conn, "vm1", destination(), wait=True, report=lambda text: None)


def test_handoff_wait_error_state_has_the_fault():
    conn = source([server("ERROR", fault={"message": "libvirt\nfailed"})])
    with pytest.raises(errors.ApiError, match="went to ERROR: libvirt failed$"):
        handoff.handoff(conn, "vm1", destination(), wait=True, report=lambda text: None)


def test_handoff_wait_timeout():
    conn = source([server("MIGRATING", "migrating", 30)])
    bars = Recorder()
    with pytest.raises(errors.ApiError, match=r"handoff not done after 0 s \(it goes on"):
        handoff.handoff(conn, "vm1", destination(), wait=True, timeout=0, progress_factory=bars,
                        report=lambda text: None)
    assert bars.bars[0].done == 30


def test_handoff_destination_server_missing():
    conn = source([None])
    with pytest.raises(NotFoundError, match="the destination has no server 'vm1'"):
        handoff.handoff(conn, "vm1", destination([server(sid="x", name="vm1")]), wait=True,
                        report=lambda text: None)


@pytest.mark.parametrize("status, body, cls, text", [
    (400, {"badRequest": {"message": "dest_token rejected by the destination"}},
     errors.ApiError, "dest_token rejected by the destination (HTTP 400)"),
    (409, {"conflictingRequest": {"message": "no flavor at the destination fits"}},
     ConflictError, "no flavor at the destination fits (HTTP 409)"),
    (404, {"itemNotFound": {"message": "Instance x could not be found."}},
     NotFoundError, "Instance x could not be found. (HTTP 404)"),
])
def test_handoff_api_errors_pass_the_message(status, body, cls, text):
    conn = source([server()], answer=(status, body))
    with pytest.raises(cls) as exc:
        handoff.handoff(conn, "vm1", destination(), wait=True)
    assert str(exc.value) == text


def test_handoff_destination_without_compute_endpoint():
    with pytest.raises(NotFoundError, match="lists no public compute endpoint"):
        handoff.handoff(source([server()]), "vm1", destination(url=None))


def test_handoff_argument_errors():
    conn, dest = source([server()]), destination()
    for kwargs in ({}, {"dest_conn": dest, "residue": "r"},
                   {"residue": "r", "dest_vmname": "n"}, {"residue": "a/b"},
                   {"residue": " "}):
        with pytest.raises(errors.UsageError) as exc:
            handoff.handoff(conn, "vm1", **kwargs)
        assert exc.value.exit_code == 2
    with pytest.raises(NotFoundError, match="no server 'nope'"):
        handoff.handoff(conn, "nope", dest)
    assert conn.compute.posts == []



def test_residue_posts_file_url():
    conn = source([server()], answer=(202, {"handoff": "img-9"}))
    assert handoff.handoff(conn, "vm1", residue="vm1-residue") == \
        {"image_id": "img-9", "name": "vm1-residue"}
    assert conn.compute.posts[0][1] == {"cloudlet-handoff": {"handoff_url":
                                                             "file://vm1-residue"}}


def test_residue_wait_until_the_image_is_active():
    conn = source([server("ACTIVE", "image_uploading"), server()],
                  answer=(202, {"handoff": "img-9"}), images=["saving", "active"])
    said = []
    out = handoff.handoff(conn, "vm1", residue="r", wait=True, report=said.append)
    assert out == {"image_id": "img-9", "name": "r", "status": "active", "size": 1234}
    assert said == ["server vm1: image_uploading", "server vm1: no task"]


def test_residue_wait_failure_deletes_the_image():
    conn = source([server()], answer=(202, {"handoff": "img-9"}), images=["killed"])
    with pytest.raises(errors.ApiError, match="image img-9 is killed"):
        handoff.handoff(conn, "vm1", residue="r", wait=True, report=lambda text: None)
    assert conn.image.deleted == ["img-9"]



def test_handoff_failure_reason_from_metadata_when_details_are_hidden():
    # Nova shows event details to admins only; the source leaves the reason in metadata.
    failed = failed_action(None)
    conn = source([server()], recorded_error="the destination has no base VM x", **failed)
    assert handoff.handoff_failure(conn, SRC, REQ) == "the destination has no base VM x"
    conn = source([server()], **failed)
    assert handoff.handoff_failure(conn, SRC, REQ) == "Error"
