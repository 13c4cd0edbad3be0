"""The os-cloudlet API through nova's own WSGI stack (in-process, fakelibvirt).

Each test boots a whole nova (a few seconds), so related checks share a test.
"""

from unittest import mock

from nova.compute import task_states
from nova import context as nova_context
from nova import objects
import nova.policy
from nova.tests.functional.api import client

from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova import glance as cloudlet_glance
from tests.compute_nova import base

UNKNOWN = "9a8b7c6d-0000-4000-8000-000000000000"
BASE_CAST = "cloudlet_compute.nova.rpcapi.CloudletComputeAPI.cloudlet_base"
OVERLAY_CAST = "cloudlet_compute.nova.rpcapi.CloudletComputeAPI.cloudlet_overlay_finish"
HANDOFF_CAST = "cloudlet_compute.nova.rpcapi.CloudletComputeAPI.cloudlet_handoff"
DEST = "cloudlet_compute.nova.destination.Destination."


class CloudletAPITest(base.CloudletTestBase):

    def setUp(self):
        super().setUp()
        self.server = self._boot()

    def _action(self, body, server_id=None, api=None):
        api = api or self.api
        resp = api.api_post("/servers/%s/action" % (server_id or self.server["id"]), body,
                            check_response_status=False)
        return resp.status, resp.body

    def _assert_error(self, body, status, *words, **kwargs):
        got, resp = self._action(body, **kwargs)
        self.assertEqual(status, got, resp)
        for word in words:
            self.assertIn(word, str(resp))
        return resp

    def _instance(self, server_id):
        return objects.Instance.get_by_uuid(nova_context.get_admin_context(), server_id)

    def _new_images(self, image_type):
        return [i for i in self.glance.images.values()
                if i.get("properties", {}).get("cloudlet_type") == image_type
                and i["id"] not in self.base_images.values()]

    def test_extensions_schema_404(self):
        exts = self.api.api_get("/extensions").body["extensions"]
        aliases = [e["alias"] for e in exts]
        self.assertIn("os-cloudlet", aliases)
        self.assertIn("os-shelve", aliases)  # nova's own list is still there
        ext = self.api.api_get("/extensions/os-cloudlet").body["extension"]
        self.assertEqual("Cloudlet", ext["name"])
        self.assertEqual("os-shelve",
                         self.api.api_get("/extensions/os-shelve").body["extension"]["alias"])

        # 400 with a message that names the problem
        self._assert_error({"cloudlet-base": {}}, 400, "'name' is a required property")
        self._assert_error({"cloudlet-base": {"name": ""}}, 400, "name")
        self._assert_error({"cloudlet-base": {"name": "b", "extra": 1}}, 400,
                           "Additional properties are not allowed")
        self._assert_error({"cloudlet-overlay-finish": {}}, 400,
                           "'overlay-name' is a required property")
        self._assert_error({"cloudlet-overlay-finish": {"overlay-name": 7}}, 400,
                           "overlay-name")
        self._assert_error({"cloudlet-handoff": {"handoff_url": "ftp://x"}}, 400,
                           "handoff_url")
        self._assert_error({"cloudlet-handoff": {"handoff_url": "http://dest:8774"}}, 400,
                           "dest_token")

        # 404 for an unknown server
        for body in ({"cloudlet-base": {"name": "b"}},
                     {"cloudlet-overlay-finish": {"overlay-name": "o"}},
                     {"cloudlet-handoff": {"handoff_url": "file://residue"}}):
            self._assert_error(body, 404, UNKNOWN, server_id=UNKNOWN)
        # A server booted from a plain image has nothing to hand off.
        self._assert_error({"cloudlet-handoff": {"handoff_url": "file://residue"}}, 409,
                           "not created from a cloudlet base VM")
        self._assert_error({"cloudlet-handoff": {"handoff_url": "http://dest:8774/v2.1",
                                                 "dest_token": "t"}}, 409,
                           "not created from a cloudlet base VM")
        self.assertEqual([], self._new_images(cloudlet_glance.BASE_DISK))

    def test_wrong_state_is_409(self):
        resp = self._assert_error({"cloudlet-overlay-finish": {"overlay-name": "o"}}, 409,
                                  "not created from a cloudlet base VM")
        self.assertIn(self.server["id"], str(resp))

        instance = self._instance(self.server["id"])
        instance.task_state = task_states.IMAGE_SNAPSHOT
        instance.save()
        self._assert_error({"cloudlet-base": {"name": "b"}}, 409, "task_state image_snapshot")
        instance.task_state = None
        instance.save()

        self.api.post_server_action(self.server["id"], {"pause": None})
        self._wait_for_state_change(self.server, "PAUSED")
        self._assert_error({"cloudlet-base": {"name": "b"}}, 409, "vm_state paused")
        self.assertEqual([], self._new_images(cloudlet_glance.BASE_DISK))
        self.assertEqual([], self._new_images(cloudlet_glance.OVERLAY))

    def test_policy(self):
        bodies = ({"cloudlet-base": {"name": "b"}},
                  {"cloudlet-overlay-finish": {"overlay-name": "o"}},
                  {"cloudlet-handoff": {"handoff_url": "file://r"}})
        # A member of another project does not even see the server (nova's own rule).
        intruder = client.TestOpenStackClient("intruder", self.api_fixture.base_url,
                                              project_id="another-project",
                                              roles=["reader", "member"])
        intruder.microversion = self.microversion
        for body in bodies:
            self._assert_error(body, 404, "could not be found", api=intruder)
        # With the new defaults enforced, a reader or an unrelated role of the project.
        self.flags(enforce_new_defaults=True, group="oslo_policy")
        nova.policy.reset()
        nova.policy.init(suppress_deprecation_warnings=True)
        for api in (self.api_fixture.reader_api, self.api_fixture.other_api):
            for body in bodies:
                self._assert_error(body, 403, "os_compute_api:os-cloudlet:", api=api)
        self.assertEqual([], self._new_images(cloudlet_glance.BASE_DISK))
        # A member and an admin may.
        with mock.patch(BASE_CAST):
            self.assertEqual(202, self._action({"cloudlet-base": {"name": "m"}})[0])
            instance = self._instance(self.server["id"])
            instance.task_state = None
            instance.save()
            status, body = self._action({"cloudlet-base": {"name": "a"}}, api=self.admin_api)
        self.assertEqual(202, status, body)

    def test_records_and_casts(self):
        with mock.patch(BASE_CAST) as cast:
            status, body = self._action({"cloudlet-base": {"name": "mybase"}})
        self.assertEqual(202, status, body)
        self.assertEqual({"base-disk", "base-memory", "base-disk-hash", "base-memory-hash"},
                         set(body))
        disk = self.glance.show(None, body["base-disk"])
        self.assertEqual("mybase-disk", disk["name"])
        props = disk["properties"]
        self.assertEqual((cloudlet_glance.BASE_DISK, "True", self.server["id"]),
                         (props["cloudlet_type"], props["is_cloudlet"], props["instance_uuid"]))
        self.assertEqual(body["base-memory"], props["cloudlet_base_memory"])
        self.assertEqual(body["base-disk-hash"], props["cloudlet_base_disk_hash"])
        self.assertEqual(body["base-memory-hash"], props["cloudlet_base_memory_hash"])
        for key, image_type in (("base-memory", cloudlet_glance.BASE_MEMORY),
                                ("base-disk-hash", cloudlet_glance.BASE_DISK_HASH),
                                ("base-memory-hash", cloudlet_glance.BASE_MEMORY_HASH)):
            self.assertEqual(image_type,
                             self.glance.show(None, body[key])["properties"]["cloudlet_type"])
        _ctxt, instance, image_ids = cast.call_args.args
        self.assertEqual(self.server["id"], instance.uuid)
        self.assertEqual(body["base-disk"], image_ids[cloudlet_glance.BASE_DISK])
        self.assertEqual(task_states.IMAGE_SNAPSHOT_PENDING,
                         self._instance(self.server["id"]).task_state)
        # A second request while the first is pending is refused.
        self._assert_error({"cloudlet-base": {"name": "again"}}, 409, "task_state")

        resumed = self._boot(image_id=self.base_images[cloudlet_glance.BASE_DISK])
        with mock.patch(OVERLAY_CAST) as cast:
            status, body = self._action({"cloudlet-overlay-finish": {"overlay-name": "ov"}},
                                        server_id=resumed["id"])
        self.assertEqual(202, status, body)
        self.assertEqual("ov", body["overlay-name"])
        image = self.glance.show(None, body["overlay-id"])
        self.assertEqual(cloudlet_glance.OVERLAY, image["properties"]["cloudlet_type"])
        self.assertEqual(base.BASE_ID, image["properties"]["base_sha256_uuid"])
        self.assertEqual(resumed["id"], image["properties"]["instance_uuid"])
        _ctxt, instance, name, overlay_id = cast.call_args.args
        self.assertEqual((resumed["id"], "ov", body["overlay-id"]),
                         (instance.uuid, name, overlay_id))
        # Each action is an instance action (its compute event says why it failed).
        for server_id, action in ((self.server["id"], "cloudlet-base"),
                                  (resumed["id"], "cloudlet-overlay-finish")):
            actions = self.api.api_get("/servers/%s/os-instance-actions"
                                       % server_id).body["instanceActions"]
            self.assertIn(action, [a["action"] for a in actions])

        # A cast that cannot be sent gives the server back and drops the records.
        with mock.patch(OVERLAY_CAST, side_effect=RuntimeError("no queue")):
            other = self._boot(image_id=self.base_images[cloudlet_glance.BASE_DISK])
            status, _body = self._action({"cloudlet-overlay-finish": {"overlay-name": "x"}},
                                         server_id=other["id"])
        self.assertEqual(500, status)
        self.assertIsNone(self._instance(other["id"]).task_state)
        self.assertEqual(["ov"], [i["name"] for i in self._new_images(cloudlet_glance.OVERLAY)])

    def test_handoff_checks_the_destination_first(self):
        from cloudlet_compute.nova.destination import DestinationError
        resumed = self._boot(image_id=self.base_images[cloudlet_glance.BASE_DISK])
        body = {"cloudlet-handoff": {"handoff_url": "http://dest:8774/v2.1/",
                                     "dest_token": "tok", "dest_vmname": "moved"}}
        for method, error, status in (
                ("find_base", DestinationError("dest_token was rejected by the destination",
                                               status=400), 400),
                ("find_base", DestinationError("the destination has no base VM x"), 409),
                ("pick_flavor", DestinationError("the destination has no flavor"), 409)):
            with mock.patch(DEST + "find_base", return_value="img",
                            side_effect=error if method == "find_base" else None), \
                    mock.patch(DEST + "pick_flavor", return_value="flv",
                               side_effect=error if method == "pick_flavor" else None), \
                    mock.patch(HANDOFF_CAST) as cast:
                self._assert_error(body, status, str(error), server_id=resumed["id"])
            cast.assert_not_called()
            self.assertIsNone(self._instance(resumed["id"]).task_state)
        self._assert_error({"cloudlet-handoff": {"handoff_url": "http://u:p@dest/v2.1",
                                                 "dest_token": "t"}}, 400, "handoff_url",
                           server_id=resumed["id"])

        built = self._instance(resumed["id"])
        built.progress = 100          # what a synthesis leaves: the handoff starts at 0
        built.save()
        with mock.patch(DEST + "find_base", return_value="img"), \
                mock.patch(DEST + "pick_flavor", return_value="flv"), \
                mock.patch(HANDOFF_CAST) as cast:
            status, resp = self._action(body, server_id=resumed["id"])
        self.assertEqual(202, status, resp)
        self.assertEqual(0, self._instance(resumed["id"]).progress)
        self.assertEqual({"handoff": "http://dest:8774/v2.1"}, resp)
        _ctxt, instance, url, token, name, image_id, flavor_id = cast.call_args.args
        self.assertEqual((resumed["id"], "http://dest:8774/v2.1", "tok", "moved", "img", "flv"),
                         (instance.uuid, url, token, name, image_id, flavor_id))
        self.assertEqual(task_states.MIGRATING, self._instance(resumed["id"]).task_state)
        actions = self.api.api_get("/servers/%s/os-instance-actions" % resumed["id"]).body
        self.assertIn("cloudlet-handoff", [a["action"] for a in actions["instanceActions"]])
        self._assert_error(body, 409, "task_state migrating", server_id=resumed["id"])

        # file://NAME stores the server as a VM overlay image.
        other = self._boot(image_id=self.base_images[cloudlet_glance.BASE_DISK])
        with mock.patch(OVERLAY_CAST) as cast:
            status, resp = self._action({"cloudlet-handoff": {"handoff_url": "file://res"}},
                                        server_id=other["id"])
        self.assertEqual(202, status, resp)
        image = self.glance.show(None, resp["handoff"])
        self.assertEqual(("res", cloudlet_glance.OVERLAY),
                         (image["name"], image["properties"]["cloudlet_type"]))


class _OverlayURLTest(base.CloudletTestBase):

    def setUp(self):
        super().setUp()
        self.server_ids_before = [s["id"] for s in self.api.get_servers()]

    def _post(self, url):
        body = self._build_server(image_uuid=self.base_images[cloudlet_glance.BASE_DISK],
                                  networks="none")
        body["metadata"] = {"overlay_url": url}
        return self.api.api_post("/servers", {"server": body}, check_response_status=False)


class OverlayURLPolicyTest(_OverlayURLTest):
    """``POST /servers`` with a refused ``overlay_url``: 400 with the policy's one line, and
    no server (issue 16)."""

    def test_refused_urls_are_400_and_create_nothing(self):
        # The policy was built from the options when the API started, not per request.
        with mock.patch.object(engine_adapter.fetchpolicy, "FetchPolicy",
                               side_effect=AssertionError("FetchPolicy built per request")):
            for url in ("http://127.0.0.1:5000/ov.zip", "http://169.254.169.254/latest",
                        "http://[::1]/ov.zip", "http://192.0.2.10:8080/ov.zip",
                        "ftp://192.0.2.10/ov.zip"):
                resp = self._post(url)
                self.assertEqual(400, resp.status, (url, resp.body))
                self.assertNotIn("Traceback", str(resp.body))
                expected = ("scheme 'ftp' is not allowed" if url.startswith("ftp")
                            else "not allowed by this cloud's overlay fetch policy")
                self.assertIn(expected, resp.body["badRequest"]["message"], url)
        self.assertEqual([self.server_ids_before], [
            [s["id"] for s in self.api.get_servers()]])


class OverlayURLAllowedTest(_OverlayURLTest):
    """The API started with ``overlay_allowed_hosts`` and any port: an allowed URL, and one
    that does not resolve on the API host, are accepted (issue 16)."""

    cloudlet_flags = {"overlay_allowed_hosts": ["127.0.0.1"], "overlay_allowed_ports": []}

    def test_allowed_and_unresolvable_urls_are_accepted(self):
        for url in ("http://127.0.0.1:5000/ov.zip", "http://overlays.invalid/ov.zip"):
            resp = self._post(url)
            self.assertEqual(202, resp.status, (url, resp.body))
            # This compute host fakes the engine: the build completes. Waiting for it keeps
            # its RPC calls from outliving the test's services (a 60 s timeout at teardown).
            self._wait_for_state_change(resp.body["server"], "ACTIVE")
