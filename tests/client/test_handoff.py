"""VM handoff in ``client.core.handoff`` and both entry points, on fake clouds.

The fakes follow the server API contract of ``cloudlet-handoff`` (source cloud):
202 ``{"handoff": URL}``, then the source server is ``migrating`` with rising ``progress``;
on success it is deleted (GET 404) and the destination has an ACTIVE server named NAME
with metadata ``cloudlet_handoff_from``; on failure the source is ACTIVE again and the
latest ``cloudlet-handoff`` instance action has an event with result ``Error`` whose
``details`` (microversion 2.84) is the reason. ``file://NAME`` answers an image id.
"""

import json
import types

import keystoneauth1.exceptions as ks_exc
import openstack.exceptions as sdk_exc
import pytest
from osc_lib import exceptions as osc_exceptions
from osc_lib.test import base

from client import cloudlet_client
from client.core import errors, handoff, sessions, waiting
from client.osc import handoff as osc_handoff
from cloudlet_compute.errors import ConflictError, NotFoundError
from cloudlet_compute.progress import NullProgress

SRC = "11111111-2222-3333-4444-555555555555"
DEST_URL = "http://10.251.0.2:8774/v2.1"
TOKEN = "gAAAA-dest-token"
REQ = "req-handoff-1"
REAL_CONNECT_DESTINATION = handoff.connect_destination


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


# ---------------------------------------------------------------- handoff.handoff

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
    # The action of this request, read with the microversion that shows event details.
    assert conn.compute.gets[-2] == ("/servers/%s/os-instance-actions/%s" % (SRC, REQ),
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


# ---------------------------------------------------------------- residue

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


# ---------------------------------------------------------------- connect_destination

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


def test_connect_destination_from_clouds_yaml(monkeypatch):
    fake = FakeConnect()
    monkeypatch.setattr(handoff.openstack, "connect", fake)
    handoff.connect_destination(cloud="dest")
    # A password from $CLOUDLET_DEST_PASSWORD is not in the way of --dest-cloud.
    handoff.connect_destination(cloud="dest", password="from-env")
    assert fake.calls == [{"cloud": "dest"}, {"cloud": "dest"}]


def test_connect_destination_from_credentials_ignores_os_variables(monkeypatch):
    fake = FakeConnect()
    monkeypatch.setattr(handoff.openstack, "connect", fake)
    handoff.connect_destination(auth_url="http://d:5000/v3", username="u", password="p",
                            project="proj", user_domain="users")
    assert fake.calls == [{
        "load_yaml_config": False, "load_envvars": False, "auth_type": "password",
        "interface": "public", "identity_api_version": "3",
        "auth": {"auth_url": "http://d:5000/v3", "username": "u", "password": "p",
                 "project_name": "proj", "project_domain_name": "Default",
                 "user_domain_name": "users"}}]


@pytest.mark.parametrize("kwargs, text", [
    ({}, "the destination cloud is missing"),
    ({"cloud": "c", "auth_url": "http://d/v3"}, "not both"),
    ({"cloud": "c", "username": "u"}, "--dest-username go with --dest-auth-url"),
    ({"auth_url": "http://d/v3", "username": "u"},
     "--dest-auth-url needs --dest-password, --dest-project"),
])
def test_connect_destination_argument_errors(monkeypatch, kwargs, text):
    fake = FakeConnect()
    monkeypatch.setattr(handoff.openstack, "connect", fake)
    with pytest.raises(errors.UsageError, match=text):
        handoff.connect_destination(**kwargs)
    assert fake.calls == []


def test_connect_destination_errors_say_destination(monkeypatch):
    monkeypatch.setattr(handoff.openstack, "connect",
                        FakeConnect(ks_exc.Unauthorized("The request you have made requires "
                                                        "authentication.")))
    with pytest.raises(errors.AuthError, match="^destination cloud: authentication failed"):
        handoff.connect_destination(auth_url="http://d/v3", username="u", password="p",
                                project="x")

    def no_cloud(**kwargs):
        raise sdk_exc.ConfigException("Cloud nope was not found.")
    monkeypatch.setattr(handoff.openstack, "connect", no_cloud)
    with pytest.raises(errors.AuthError) as exc:
        handoff.connect_destination(cloud="nope")
    assert str(exc.value) == "destination cloud: cloud configuration: Cloud nope was not found."


def test_destination_endpoint_token_error_says_destination():
    dest = destination()
    dest.endpoint_for = lambda *a, **k: (_ for _ in ()).throw(
        ks_exc.EndpointNotFound("no compute"))
    with pytest.raises(errors.ApiError, match="^destination cloud: no compute"):
        handoff.destination_endpoint(dest)


# ---------------------------------------------------------------- cloudlet-client handoff

@pytest.fixture
def wired(monkeypatch):
    """``cloudlet-client`` on fake clouds: ``wired(states, ...)`` sets the source cloud."""
    made = {}

    def wire(states, dest=None, **kwargs):
        made["conn"] = source(states, **kwargs)
        made["dest"] = dest or destination([MOVED])
        monkeypatch.setattr(sessions, "connect", lambda cloud=None: made["conn"])
        monkeypatch.setattr(handoff.openstack, "connect", FakeConnect())

        def connect_destination(*args):
            made["dest_args"] = args
            return made["dest"]
        monkeypatch.setattr(handoff, "connect_destination", connect_destination)
        return made
    return wire


def test_cli_handoff_wait(wired, capsys):
    made = wired([server("MIGRATING", "migrating", 40), None])
    code = cloudlet_client.main(["--json", "handoff", "vm1", "--dest-cloud", "dest",
                                 "--dest-vmname", "vm1-moved", "--wait"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out) == {"id": "dest-1", "name": "vm1-moved", "status": "ACTIVE",
                               handoff.HANDOFF_FROM: SRC}
    assert "server vm1: migrating" in err
    assert made["dest_args"] == ("dest", None, None, None, None, None, None)


def test_cli_handoff_explicit_credentials(wired, capsys, monkeypatch):
    made = wired([server()])
    monkeypatch.setenv("CLOUDLET_DEST_PASSWORD", "from-env")
    code = cloudlet_client.main([
        "handoff", "vm1", "--dest-auth-url", "http://d:5000/v3", "--dest-username", "u",
        "--dest-project", "p", "--dest-user-domain", "ud"])
    out, _err = capsys.readouterr()
    assert code == 0
    assert made["dest_args"] == (None, "http://d:5000/v3", "u", "from-env", "p", None, "ud")
    assert "handoff      %s" % DEST_URL in out


def test_cli_handoff_failure_is_one_line(wired, capsys):
    wired([server("MIGRATING", "migrating", 20), server()],
          **failed_action("no base VM %s at the destination" % ("b" * 64)))
    code = cloudlet_client.main(["handoff", SRC, "--dest-cloud", "dest", "--wait"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1] == (
        "cloudlet-client: error: handoff of server vm1 failed: no base VM %s at the "
        "destination" % ("b" * 64))


def test_cli_handoff_conflict_exit_code(wired, capsys):
    wired([server()], answer=(409, {"conflictingRequest": {"message": "server is busy"}}))
    assert cloudlet_client.main(["handoff", "vm1", "--dest-cloud", "d"]) == 5
    assert capsys.readouterr().err.strip() == \
        "cloudlet-client: error: server is busy (HTTP 409)"


def test_cli_handoff_residue(wired, capsys):
    made = wired([server()], answer=(202, {"handoff": "img-9"}))
    code = cloudlet_client.main(["--json", "handoff", "vm1", "--residue", "vm1-residue"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"image_id": "img-9", "name": "vm1-residue"}
    assert "dest_args" not in made


def test_cli_handoff_usage_errors(wired, capsys, monkeypatch):
    monkeypatch.delenv("CLOUDLET_DEST_PASSWORD", raising=False)
    wired([server()])
    # Not the fake: the real option checks (before anything is connected).
    monkeypatch.setattr(handoff, "connect_destination", REAL_CONNECT_DESTINATION)
    code = cloudlet_client.main(["handoff", "vm1", "--dest-auth-url", "http://d/v3"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "cloudlet-client: error: --dest-auth-url needs --dest-username, --dest-password, "
        "--dest-project")
    assert cloudlet_client.main(["handoff", "vm1", "--residue", "r",
                                 "--dest-vmname", "n"]) == 2


# ---------------------------------------------------------------- openstack cloudlet handoff

class TestOscHandoff(base.TestCommand):

    def _run(self, conn, argv, verify):
        cmd = osc_handoff.HandoffServer(self.app, None)
        self.app.client_manager.cloudlet = conn
        parsed = self.check_parser(cmd, argv, verify)
        return cmd.take_action(parsed)

    def test_handoff_to_dest_cloud(self):
        conn, dest = source([server("MIGRATING", "migrating", 50), None]), destination([MOVED])
        seen = []

        def connect_destination(*args):
            seen.append(args)
            return dest
        original, handoff.connect_destination = handoff.connect_destination, connect_destination
        try:
            columns, data = self._run(
                conn, ["vm1", "--dest-cloud", "dest", "--dest-vmname", "vm1-moved", "--wait"],
                [("server", "vm1"), ("dest_cloud", "dest"), ("dest_vmname", "vm1-moved"),
                 ("wait", True), ("residue", None)])
        finally:
            handoff.connect_destination = original
        self.assertEqual(dict(zip(columns, data)),
                         {"id": "dest-1", "name": "vm1-moved", "status": "ACTIVE",
                          handoff.HANDOFF_FROM: SRC})
        self.assertEqual(seen, [("dest", None, None, None, None, None, None)])

    def test_residue(self):
        conn = source([server()], answer=(202, {"handoff": "img-9"}))
        columns, data = self._run(conn, ["vm1", "--residue", "r"], [("residue", "r")])
        self.assertEqual(dict(zip(columns, data)), {"image_id": "img-9", "name": "r"})

    def test_errors_are_command_errors(self):
        conn = source([server()])
        self.assertRaisesRegex(osc_exceptions.CommandError, "--dest-auth-url needs",
                               self._run, conn, ["vm1", "--dest-auth-url", "http://d/v3",
                                                 "--dest-username", "u"], [])

    def test_destination_is_required(self):
        cmd = osc_handoff.HandoffServer(self.app, None)
        self.assertRaises(base.ParserException, self.check_parser, cmd, ["vm1"], [])
        self.assertRaises(base.ParserException, self.check_parser, cmd,
                          ["vm1", "--dest-cloud", "c", "--residue", "r"], [])


def test_handoff_failure_reason_from_metadata_when_details_are_hidden():
    # Nova shows event details to admins only; the source leaves the reason in metadata.
    failed = failed_action(None)
    conn = source([server()], recorded_error="the destination has no base VM x", **failed)
    assert handoff.handoff_failure(conn, SRC, REQ) == "the destination has no base VM x"
    conn = source([server()], **failed)
    assert handoff.handoff_failure(conn, SRC, REQ) == "Error"
