"""nova-compute's side of a VM handoff: the destination server made, the guest sent, and
on any failure the destination server deleted and the listener closed."""

import types

import pytest

from cloudlet_compute.errors import CloudletError, HypervisorError
from cloudlet_compute.nova import destination, engine_adapter, glance, handoff

OPTS = types.SimpleNamespace(handoff_host="192.0.2.1", handoff_wait=60,
                             handoff_compression="auto")
TARGET = ("http://dest:8774/v2.1", "token", "moved", "img-b", "fl-b")


class FakeListener:
    url, secret_text, closed = "cloudlet+tcp://192.0.2.1:4000", "s3cret", False

    def close(self):
        self.closed = True


class FakeDestination:
    def __init__(self, create_error=None):
        self.create_error, self.created, self.deleted = create_error, [], []
        self.status = "BUILD"

    def __call__(self, url, token):
        assert (url, token) == TARGET[:2]
        return self

    def create_server(self, name, image_id, flavor_id, metadata):
        if self.create_error:
            raise self.create_error
        self.created.append((name, image_id, flavor_id, metadata))
        return "dest-1"

    def server(self, server_id):
        return {"id": server_id, "status": self.status,
                "fault": {"message": "No valid host"}}

    def delete_server(self, server_id):
        self.deleted.append(server_id)


@pytest.fixture
def world(monkeypatch):
    dest, listener, sent = FakeDestination(), FakeListener(), []
    monkeypatch.setattr(destination, "Destination", dest)
    monkeypatch.setattr(engine_adapter, "handoff_listener", lambda host: listener)

    def send(conn, store, name, lis, dest_id, wait, check, report, compression):
        sent.append((name, dest_id, wait, compression))
        for fraction in (0.01, 0.03, 0.06, 0.5, 0.52, 1.0):
            report(fraction)
        check()
    monkeypatch.setattr(engine_adapter, "handoff_send", send)
    return types.SimpleNamespace(dest=dest, listener=listener, sent=sent)


def test_handoff_makes_the_server_sends_and_reports_in_steps(world):
    reported = []
    assert handoff.hand_off("conn", "store", "instance-1", "uuid-1", TARGET, reported.append,
                            OPTS) == "dest-1"
    [(name, image, flavor, metadata)] = world.dest.created
    assert (name, image, flavor) == ("moved", "img-b", "fl-b")
    assert metadata == {glance.METADATA_HANDOFF_SOURCE: FakeListener.url,
                        glance.METADATA_HANDOFF_SECRET: "s3cret",
                        glance.METADATA_HANDOFF_FROM: "uuid-1"}
    assert world.sent == [("instance-1", "dest-1", 60, "auto")]
    assert reported == [6, 50, 100]
    assert world.dest.deleted == [] and not world.listener.closed


def test_failed_destination_server_is_deleted_and_named(world):
    world.dest.status = "ERROR"
    with pytest.raises(CloudletError, match="destination server dest-1 failed: No valid host"):
        handoff.hand_off("conn", "store", "instance-1", "uuid-1", TARGET, print, OPTS)
    assert world.dest.deleted == ["dest-1"] and world.listener.closed


def test_send_failure_deletes_the_destination_server(world, monkeypatch):
    def broken(*args):
        raise HypervisorError("migration failed")
    monkeypatch.setattr(engine_adapter, "handoff_send", broken)
    with pytest.raises(HypervisorError, match="migration failed"):
        handoff.hand_off("conn", "store", "instance-1", "uuid-1", TARGET, print, OPTS)
    assert world.dest.deleted == ["dest-1"] and world.listener.closed


def test_refused_create_is_a_cloudlet_error_and_deletes_nothing(world):
    world.dest.create_error = destination.DestinationError("quota exceeded", 403)
    with pytest.raises(CloudletError, match="quota exceeded"):
        handoff.hand_off("conn", "store", "instance-1", "uuid-1", TARGET, print, OPTS)
    assert world.dest.deleted == [] and world.listener.closed
