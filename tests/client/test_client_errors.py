"""Every error of the clients: a one-line message, its exit code, and nothing left behind.

Exit codes of ``cloudlet-client``: 2 bad options, 3 bad package, 4 not found, 5 conflict,
6 unreachable URL, 8 authentication, 130 interrupted.
``openstack cloudlet`` exits 1 with the same message, like every ``openstack`` command.
"""

import os
import signal
import subprocess

import pytest
import yaml

from stack.httpserve import FileServer
from tests.client.conftest import Created, as_json, client_argv, cloudlet_client, openstack
from tests.support import cloud


def error_line(proc, code):
    """The one-line error of a failed ``cloudlet-client`` run with exit code ``code``."""
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cloudlet-client: error: ")
    return lines[0]


def osc_error(proc):
    assert proc.returncode == 1, proc.stderr
    return proc.stderr.strip()


@pytest.fixture(scope="module")
def imported(clouds, base_package):
    """The base package imported once for this module (and deleted afterwards)."""
    run = Created(clouds[0])
    try:
        yield run, as_json(cloudlet_client("--json", "import-base", base_package[0],
                                           run.name("base")))
    finally:
        run.cleanup()


def test_auth_failure(stack_up, tmp_path):
    with open(cloud.stack.clouds_yaml_path()) as f:
        config = yaml.safe_load(f)
    config["clouds"]["cloudlet-demo"]["auth"]["password"] = "wrong"
    bad = tmp_path / "clouds.yaml"
    bad.write_text(yaml.safe_dump(config))
    env = dict(cloud.env(), OS_CLIENT_CONFIG_FILE=str(bad))
    line = error_line(cloudlet_client("list-base", check=False, env=env), 8)
    assert "authentication failed" in line and "401" in line
    assert "wrong" not in line
    proc = openstack("cloudlet", "base", "list", check=False, env=env)
    assert proc.returncode == 1 and "401" in proc.stderr
    line = error_line(cloudlet_client("--os-cloud", "no-such-cloud", "list-base", check=False),
                      8)
    assert "no-such-cloud was not found" in line


def test_not_found(created, tmp_path):
    line = error_line(cloudlet_client("resume-base", created.name("nothing"),
                                      created.name("vm"), check=False), 4)
    assert line.endswith("no base VM image '%s'" % created.name("nothing"))
    target = tmp_path / "overlay.zip"
    line = error_line(cloudlet_client("download", created.name("nothing"), target,
                                      check=False), 4)
    assert "no VM overlay image" in line
    line = error_line(cloudlet_client("create-overlay", created.name("nothing"),
                                      created.name("ov"), check=False), 4)
    assert "no server '%s'" % created.name("nothing") in line
    assert os.listdir(tmp_path) == []
    assert "no VM overlay image" in osc_error(openstack(
        "cloudlet", "overlay", "download", created.name("nothing"), target, check=False))
    assert not created.servers() and not created.images()


def test_bad_package(created, tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 this is not a zip")
    line = error_line(cloudlet_client("import-base", junk, created.name("bad"), check=False), 3)
    assert "is not a base package zip" in line
    line = error_line(cloudlet_client("import-base", tmp_path / "missing.zip",
                                      created.name("bad"), check=False), 4)
    assert "does not exist" in line
    assert not created.images()


def test_unreachable_url(created, workdir):
    line = error_line(cloudlet_client("synthesis", "http://127.0.0.1:9/overlay.zip",
                                      created.name("syn"), "--network", "none", check=False), 6)
    assert "cannot fetch http://127.0.0.1:9/overlay.zip" in line
    with FileServer(workdir) as server:
        line = error_line(cloudlet_client("synthesis", server.url("missing.zip"),
                                          created.name("syn"), check=False), 4)
    assert "HTTP 404" in line
    assert not created.servers()


def test_handoff_errors(created):
    # Checked before anything is posted: the server, the destination's credentials.
    line = error_line(cloudlet_client("handoff", created.name("vm"), "--dest-cloud",
                                      "cloudlet-demo", check=False), 4)
    assert line.endswith("no server '%s'" % created.name("vm"))
    line = error_line(cloudlet_client("handoff", created.name("vm"), "--dest-cloud",
                                      "no-such-cloud", check=False), 8)
    assert "destination cloud: cloud configuration:" in line
    assert "no-such-cloud was not found" in line
    line = error_line(cloudlet_client("handoff", created.name("vm"), "--dest-auth-url",
                                      "http://127.0.0.1:5000/v3", "--dest-username", "demo",
                                      "--dest-password", "wrong", "--dest-project", "demo",
                                      check=False), 8)
    assert "destination cloud: authentication failed" in line and "wrong" not in line
    line = error_line(cloudlet_client("handoff", created.name("vm"), "--dest-auth-url",
                                      "http://127.0.0.1:5000/v3", check=False), 2)
    assert line.endswith("--dest-auth-url needs --dest-username, --dest-password, "
                         "--dest-project")
    assert "no server" in osc_error(openstack("cloudlet", "handoff", created.name("vm"),
                                              "--residue", created.name("res"), check=False))
    assert not created.servers() and not created.images()


def test_conflicts(imported, base_package, clouds):
    run, ids = imported
    demo = clouds[0]
    before = {i.id for i in run.images()}
    line = error_line(cloudlet_client("import-base", base_package[0], run.name("again"),
                                      check=False), 5)
    assert "base VM %s is already in Glance" % base_package[1] in line
    assert {i.id for i in run.images()} == before == set(ids.values())

    # A 409 from the API, its message passed through: the server is paused.
    server = as_json(cloudlet_client("--json", "resume-base", ids["base-disk"],
                                     run.name("paused"), "--network", "none", "--wait"))
    demo.compute.pause_server(server["id"])
    cloud.wait_for(lambda: demo.compute.get_server(server["id"]).status == "PAUSED", 60,
                   "the server to pause")
    line = error_line(cloudlet_client("create-overlay", server["id"], run.name("ov"),
                                      check=False), 5)
    assert ("Cannot 'cloudlet-overlay-finish' instance %s while it is in vm_state paused "
            "(HTTP 409)" % server["id"]) in line
    assert {i.id for i in run.images()} == before
    assert "vm_state paused" in osc_error(openstack(
        "cloudlet", "overlay", "create", server["id"], run.name("ov"), check=False))


def _default_sigint():
    """Ctrl-C as a terminal delivers it: a runner started in the background (``cmd &``)
    ignores SIGINT, its children inherit that, and Python then installs no
    KeyboardInterrupt handler (this test failed twice that way)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupt_deletes_the_server(imported, clouds):
    """Ctrl-C while the client waits for ACTIVE: exit 130, the server is deleted. nova-compute
    is frozen until the signal is in, so the server cannot become ACTIVE first."""
    run, ids = imported
    demo = clouds[0]
    name = run.name("interrupted")
    with cloud.frozen("nova-compute"):
        proc = subprocess.Popen(client_argv("resume-base", ids["base-disk"], name,
                                            "--network", "none", "--wait"),
                                env=cloud.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=_default_sigint)
        try:
            server = cloud.wait_for(lambda: demo.compute.find_server(name), 60,
                                    "the server", interval=0.2)
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "cloudlet-client: error: interrupted"

    def gone():
        found = demo.compute.find_server(server.id)
        return found is None or found.status == "DELETED"
    cloud.wait_for(gone, 120, "the interrupted server to be deleted")
