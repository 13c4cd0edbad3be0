"""VM handoff through both entry points on fake clouds: ``cloudlet-client handoff`` and
``openstack cloudlet handoff``."""

import json

import pytest
from osc_lib import exceptions as osc_exceptions
from osc_lib.test import base

from client import cloudlet_client
from client.core import handoff, sessions
from client.osc import handoff as osc_handoff
from tests.client.handoff_fakes import fast  # noqa: F401 (autouse fixture)
from tests.client.handoff_fakes import (DEST_URL, MOVED, SRC, FakeConnect, destination,
                                        failed_action, server, source)

REAL_CONNECT_DESTINATION = handoff.connect_destination


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

