"""``cloudlet base cache`` / ``cache-base`` and ``cloudlet base hosts`` / ``list-base-hosts``
against a fake cloud: the request nova gets (its 2.81 aggregate image cache with the base's
disk image), the listing's rows, and one-line errors with a non-zero exit (unknown base,
unknown aggregate, not an admin)."""

import json
import types
from unittest import mock

import openstack.exceptions as sdk_exc
import pytest
from osc_lib import exceptions as osc_exceptions

from client import cloudlet_client
from client.core import bases
from client.osc import base as osc_base
from cloudlet_compute import imagemodel as model

BASE_ID = "cd" * 32
POLICY = "Policy doesn't allow os_compute_api:%s to be performed."


class Response:
    def __init__(self, status, body=None):
        self.status_code, self._body = status, body
        self.content = json.dumps(body).encode() if body is not None else b""
        self.text, self.reason, self.headers = self.content.decode(), "", {}

    def json(self):
        return self._body


class FakeCompute:
    """Nova: one aggregate, two hosts reporting their caches; ``admin`` or not."""

    def __init__(self, admin=True):
        self.admin, self.posts = admin, []
        self.aggregate = types.SimpleNamespace(id=7, name="edge", hosts=["c2", "c1"])
        self.hosts = [{"host": "c1", "node": "c1", "bases": [BASE_ID, "ef" * 32],
                       "base_images": ["disk-1"]},
                      {"host": "c2", "node": "c2", "bases": [], "base_images": []}]

    def find_aggregate(self, ref, ignore_missing=True):
        if not self.admin:
            raise sdk_exc.ForbiddenException(message=POLICY % "os-aggregates:index",
                                             http_status=403)
        return self.aggregate if ref in ("edge", "7") else None

    def post(self, url, json=None, microversion=None, raise_exc=True):
        self.posts.append((url, json, microversion))
        return Response(202)

    def get(self, url, raise_exc=True):
        assert url == "/os-cloudlet-bases", url
        if not self.admin:
            return Response(403, {"forbidden": {"code": 403,
                                                "message": POLICY % "os-cloudlet:hosts"}})
        return Response(200, {"hosts": self.hosts})


def fake_conn(admin=True):
    disk = types.SimpleNamespace(id="disk-1", name="ubuntu-disk", status="active",
                                 properties={model.PROPERTY_TYPE: model.BASE_DISK,
                                             model.PROPERTY_BASE_ID: BASE_ID})
    other = types.SimpleNamespace(id="ov", name="app", status="active",
                                  properties={model.PROPERTY_TYPE: model.OVERLAY})
    return types.SimpleNamespace(compute=FakeCompute(admin), image=types.SimpleNamespace(
        images=lambda **query: [disk, other]))


@pytest.mark.parametrize("ref", ["ubuntu-disk", "disk-1", BASE_ID])
def test_cache_posts_novas_aggregate_image_cache_for_the_disk_image(ref):
    conn = fake_conn()
    answer = bases.cache_base(conn, ref, "edge", "openstack cloudlet base hosts")
    assert conn.compute.posts == [("/os-aggregates/7/images", {"cache": [{"id": "disk-1"}]},
                                   "2.81")]
    assert (answer["base_id"], answer["image"], answer["aggregate"], answer["hosts"]) == \
        (BASE_ID, "disk-1", "edge", "c1,c2")
    assert answer["status"].startswith("accepted") and \
        "`openstack cloudlet base hosts`" in answer["status"]


def test_hosts_lists_each_host_and_base_by_name():
    assert bases.cached_bases(fake_conn()) == [
        {"host": "c1", "base_id": BASE_ID, "name": "ubuntu-disk"},
        {"host": "c1", "base_id": "ef" * 32, "name": None},      # no image the user sees
        {"host": "c2", "base_id": None, "name": None}]           # caches nothing


def run_client(conn, *argv):
    with mock.patch("client.core.sessions.connect", return_value=conn):
        return cloudlet_client.main(["--json"] + list(argv))


def test_cloudlet_client_commands(capsys):
    conn = fake_conn()
    assert run_client(conn, "cache-base", BASE_ID, "--aggregate", "7") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["image"] == "disk-1" and "`cloudlet-client list-base-hosts`" in out["status"]
    assert run_client(conn, "list-base-hosts") == 0
    assert [r["host"] for r in json.loads(capsys.readouterr().out)] == ["c1", "c1", "c2"]


@pytest.mark.parametrize("admin, argv, code, message", [
    (True, ["cache-base", "nope", "--aggregate", "edge"], 4, "no base VM image 'nope'"),
    (True, ["cache-base", "ubuntu-disk", "--aggregate", "far"], 4, "no aggregate 'far'"),
    (False, ["cache-base", "ubuntu-disk", "--aggregate", "edge"], 1,
     POLICY % "os-aggregates:index"),
    (False, ["list-base-hosts"], 1, POLICY % "os-cloudlet:hosts" + " (HTTP 403)")])
def test_errors_are_one_line_with_a_non_zero_exit(admin, argv, code, message, capsys):
    conn = fake_conn(admin)
    assert run_client(conn, *argv) == code
    out, err = capsys.readouterr()
    assert out == "" and err == "cloudlet-client: error: %s\n" % message
    assert conn.compute.posts == []


def osc_command(cls, conn, argv):
    app = types.SimpleNamespace(client_manager=types.SimpleNamespace(cloudlet=conn))
    cmd = cls(app, None)
    return cmd, cmd.get_parser("openstack").parse_args(argv)


def test_osc_commands():
    conn = fake_conn()
    cmd, args = osc_command(osc_base.CacheBase, conn, ["ubuntu-disk", "--aggregate", "edge"])
    columns, values = cmd.take_action(args)
    assert dict(zip(columns, values))["image"] == "disk-1"
    cmd, args = osc_command(osc_base.ListBaseHosts, conn, [])
    headers, rows = cmd.take_action(args)
    assert headers == ("Host", "Base Id", "Name")
    assert rows[0] == ("c1", BASE_ID, "ubuntu-disk")
    cmd, args = osc_command(osc_base.ListBaseHosts, fake_conn(admin=False), [])
    with pytest.raises(osc_exceptions.CommandError, match="os-cloudlet:hosts"):
        cmd.take_action(args)
