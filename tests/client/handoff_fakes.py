"""Fake clouds for the VM handoff tests of the client (``test_handoff_*.py``).

The fakes follow the server API contract of ``cloudlet-handoff`` (source cloud):
202 ``{"handoff": URL}``, then the source server is ``migrating`` with rising ``progress``;
on success it is deleted (GET 404) and the destination has an ACTIVE server named NAME
with metadata ``cloudlet_handoff_from``; on failure the source is ACTIVE again and the
latest ``cloudlet-handoff`` instance action has an event with result ``Error`` whose
``details`` (microversion 2.84) is the reason. ``file://NAME`` answers an image id.

Import ``fast`` (autouse: no waiting between polls) into each test module that waits.
"""

import json
import types

import openstack.exceptions as sdk_exc
import pytest

from client.core import handoff, waiting
from cloudlet_compute.progress import NullProgress

SRC = "11111111-2222-3333-4444-555555555555"
DEST_URL = "http://10.251.0.2:8774/v2.1"
TOKEN = "gAAAA-dest-token"
REQ = "req-handoff-1"


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(waiting, "POLL_INTERVAL", 0)
    monkeypatch.setattr(waiting.time, "sleep", lambda s: None)


class Response:
    def __init__(self, status, body=None, headers=None):
        self.status_code, self._body = status, body
        self.headers = headers or {}
        self.content = json.dumps(body).encode() if body is not None else b""
        self.text, self.reason = self.content.decode(), "reason"

    def json(self):
        return self._body


def server(status="ACTIVE", task_state=None, progress=0, name="vm1", sid=SRC,
           metadata=None, fault=None):
    return types.SimpleNamespace(id=sid, name=name, status=status, task_state=task_state,
                                 progress=progress, metadata=metadata or {}, fault=fault)


class FakeCompute:
    """The source cloud's compute API: ``states`` are what GET /servers/SRC answers in
    turn (None: 404), the last one for good."""

    def __init__(self, states, answer=(202, {"handoff": DEST_URL}), actions=None,
                 details=None, recorded_error=None):
        self.states, self.answer = list(states), answer
        self.actions, self.details = actions or [], details or {}
        self.recorded_error = recorded_error
        self.posts, self.gets = [], []

    def find_server(self, ref, ignore_missing=True):
        return server() if ref in ("vm1", SRC) else None

    def post(self, path, json=None, raise_exc=True):
        self.posts.append((path, json))
        return Response(self.answer[0], self.answer[1], {"x-openstack-request-id": REQ})

    def get_server(self, sid):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if state is None:
            raise sdk_exc.NotFoundException("No Server found for %s" % sid)
        return state

    def get(self, path, microversion=None, raise_exc=True):
        self.gets.append((path, microversion))
        if path.endswith("/os-instance-actions"):
            return Response(200, {"instanceActions": self.actions})
        if "/metadata/" in path:
            if self.recorded_error is None:
                return Response(404, {"itemNotFound": {"message": "no such key"}})
            return Response(200, {"meta": {path.rsplit("/", 1)[1]: self.recorded_error}})
        return Response(200, {"instanceAction": self.details[path.rsplit("/", 1)[1]]})


class FakeImage:
    def __init__(self, statuses):
        self.statuses, self.deleted = list(statuses), []

    def find_image(self, image_id, ignore_missing=True):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return types.SimpleNamespace(id=image_id, status=status)

    def get_image(self, image_id):
        return types.SimpleNamespace(id=image_id, status=self.statuses[-1], size=1234)

    def delete_image(self, image_id, ignore_missing=True):
        self.deleted.append(image_id)


def source(states, images=("active",), **kwargs):
    return types.SimpleNamespace(compute=FakeCompute(states, **kwargs),
                                 image=FakeImage(images))


class FakeDestCompute:
    def __init__(self, servers):
        self._servers = servers

    def servers(self, details=True):
        return list(self._servers)

    def get_server(self, sid):
        return next(s for s in self._servers if s.id == sid)


def destination(servers=(), url=DEST_URL, token=TOKEN):
    dest = types.SimpleNamespace(compute=FakeDestCompute(list(servers)), auth_token=token)
    dest.endpoint_calls = []

    def endpoint_for(service_type, interface=None, region_name=None):
        dest.endpoint_calls.append((service_type, interface))
        return url
    dest.endpoint_for = endpoint_for
    return dest


MOVED = server(sid="dest-1", name="vm1-moved", metadata={handoff.HANDOFF_FROM: SRC})


class Recorder:
    """A progress factory that keeps what the bar was told."""

    def __init__(self):
        self.bars = []

    def __call__(self, label, total=None, unit="B"):
        bar = NullProgress(label, total, unit)
        self.bars.append(bar)
        return bar


def failed_action(reason, request_id=REQ):
    actions = [{"action": handoff.HANDOFF_ACTION, "request_id": request_id,
                "start_time": "2026-11-25T04:00:00.000000"},
               {"action": "create", "request_id": "req-create",
                "start_time": "2026-11-25T03:00:00.000000"}]
    details = {request_id: {"action": handoff.HANDOFF_ACTION, "message": "Error", "events": [
        {"event": "compute_cloudlet_handoff", "result": "Error", "details": reason}]}}
    return {"actions": actions, "details": details}


class FakeConnect:
    def __init__(self, error=None):
        self.calls, self.error = [], error

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        conn = types.SimpleNamespace()

        def authorize():
            if self.error:
                raise self.error
        conn.authorize = authorize
        return conn
