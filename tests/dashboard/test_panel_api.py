"""Unit tests of the Cloudlet panel's API module (dashboard_panel.api.cloudlet) itself, with
Horizon's API layer (openstack_dashboard.api: its glance helpers, novaclient) mocked, as
Horizon's own tests mock it."""

import types
import urllib.parse
from unittest import mock

from glanceclient import exc as glance_exceptions
from novaclient import exceptions as nova_exceptions
from openstack_dashboard.api import _nova as horizon_nova
from openstack_dashboard.api import glance
from openstack_dashboard.test import helpers as test

from dashboard_panel.api import cloudlet as api
from dashboard_panel.exceptions import CloudletAPIError, CloudletNotFound
from tests.dashboard.panel_helpers import (BASE_DISK, BASE_ID, OVERLAY, SYNTHESIZED,
                                           PanelTestCase, action_answer, glance_image, server)

class ApiTests(PanelTestCase):
    """The API module's own logic, over Horizon's mocked API layer."""

    def novaclient(self):
        """The novaclient the panel gets (``self.mock_novaclient`` returns it)."""
        return self.mock_novaclient.return_value

    def assert_microversion(self):
        for call in self.mock_novaclient.call_args_list:
            self.assertEqual(call.kwargs, {"version": api.COMPUTE_MICROVERSION})

    @test.create_mocks({glance: ["image_list_detailed"], horizon_nova: ["novaclient"]})
    def test_instance_list_keeps_servers_from_base_images(self):
        self.mock_image_list_detailed.return_value = (
            [glance_image("img-1", BASE_DISK), glance_image("other", OVERLAY)], False, False)
        self.novaclient().servers.list.return_value = [
            server("a"), server("b", image_id="other"), server("c", kind=SYNTHESIZED)]

        got = api.instance_list(mock.Mock())

        self.assertEqual([(i.id, i.cloudlet_type, i.ips, i.power_state, i.flavor_name)
                          for i in got],
                         [("a", api.RESUMED, ["10.0.0.5"], "RUNNING", "cl.tiny"),
                          ("c", api.SYNTHESIZED, ["10.0.0.5"], "RUNNING", "cl.tiny")])
        self.mock_image_list_detailed.assert_called_once_with(
            mock.ANY, filters={"cloudlet_type": BASE_DISK})
        self.novaclient().servers.list.assert_called_once_with(detailed=True)
        self.assert_microversion()

    @test.create_mocks({horizon_nova: ["novaclient"]})
    def test_create_overlay_posts_action_and_reports_nova_message(self):
        self.novaclient().client.post.side_effect = nova_exceptions.Conflict(409, "busy")
        with self.assertRaisesRegex(CloudletAPIError, r"^busy \(HTTP 409\)$"):
            api.create_overlay(mock.Mock(), "srv-1", "ov")
        self.novaclient().client.post.assert_called_once_with(
            "/servers/srv-1/action", body={"cloudlet-overlay-finish": {"overlay-name": "ov"}})
        self.assert_microversion()

    @test.create_mocks({horizon_nova: ["novaclient"]})
    def test_create_overlay_returns_the_image_id(self):
        self.novaclient().client.post.return_value = action_answer({"overlay-id": "ov-9"})
        self.assertEqual(api.create_overlay(mock.Mock(), "srv-1", "ov"), "ov-9")

    def test_overlay_meta_refuses_non_http(self):
        for url in ("/etc/passwd", "file:///etc/passwd", "ftp://h/o.zip"):
            with self.assertRaisesRegex(CloudletAPIError, "not an http"):
                api.overlay_meta(mock.Mock(), url)

    def test_overlay_meta_follows_the_fetch_policy(self):
        """Loopback, the metadata address and other ports are refused with the policy's one
        line before anything connects (Horizon's test harness fails any real HTTP call)."""
        for url in ("http://127.0.0.1:5000/o.zip", "http://169.254.169.254/latest",
                    "http://[::1]/o.zip", "http://192.0.2.1:8080/o.zip"):
            with self.assertRaisesRegex(CloudletAPIError,
                                        "not allowed by this cloud's overlay fetch policy"):
                api.overlay_meta(mock.Mock(), url)

    def test_overlay_meta_uses_overridden_fetch_policy_settings(self):
        """CLOUDLET_OVERLAY_* settings changed (here by the test) are what the next request
        checks against; back to the defaults afterwards."""
        url = "http://127.0.0.1:5000/o.zip"
        with self.settings(CLOUDLET_OVERLAY_ALLOWED_HOSTS=["127.0.0.1"],
                           CLOUDLET_OVERLAY_ALLOWED_PORTS=[]), \
                mock.patch.object(api.synthesis, "read_meta", return_value={"m": 1}) as read:
            self.assertEqual(api.overlay_meta(mock.Mock(), url), {"m": 1})
        read.call_args.kwargs["policy"].check(urllib.parse.urlsplit(url))   # no RefusedURL
        with self.assertRaisesRegex(CloudletAPIError,
                                    "not allowed by this cloud's overlay fetch policy"):
            api.overlay_meta(mock.Mock(), url)

    def test_fetch_policy_is_built_once_per_settings_value(self):
        api._fetch_policy.cache_clear()
        real = api.fetchpolicy.FetchPolicy
        with mock.patch.object(api.fetchpolicy, "FetchPolicy", side_effect=real) as built, \
                mock.patch.object(api.synthesis, "read_meta", return_value={}) as read:
            for _ in range(3):
                api.overlay_meta(mock.Mock(), "http://192.0.2.1/o.zip")
            self.assertEqual(built.call_count, 1)
            policies = {id(c.kwargs["policy"]) for c in read.call_args_list}
            self.assertEqual(len(policies), 1)
            with self.settings(CLOUDLET_OVERLAY_DISALLOWED_HOSTS=["192.0.2.0/24"]):
                api.overlay_meta(mock.Mock(), "http://192.0.2.1/o.zip")
                api.overlay_meta(mock.Mock(), "http://192.0.2.1/o.zip")
                self.assertEqual(built.call_count, 2)
                self.assertEqual(built.call_args.args, ((), ("192.0.2.0/24",),
                                                        api.fetchpolicy.DEFAULT_PORTS))
            api.overlay_meta(mock.Mock(), "http://192.0.2.1/o.zip")
            self.assertEqual(built.call_count, 2)   # the defaults' policy, kept
            self.assertIs(read.call_args.kwargs["policy"], read.call_args_list[0].kwargs["policy"])

    @test.create_mocks({glance: ["image_get", "image_delete"]})
    def test_delete_base_deletes_linked_images_then_disk(self):
        self.mock_image_get.return_value = glance_image(
            "d", BASE_DISK, cloudlet_base_memory="m", cloudlet_base_disk_hash="dh",
            cloudlet_base_memory_hash="mh")
        request = mock.Mock()
        api.delete_base(request, "d")
        self.assertEqual(self.mock_image_delete.call_args_list,
                         [mock.call(request, "m"), mock.call(request, "dh"),
                          mock.call(request, "mh"), mock.call(request, "d")])

    @test.create_mocks({glance: ["image_get", "image_delete"]})
    def test_delete_base_goes_on_past_a_linked_image_already_gone(self):
        self.mock_image_get.return_value = glance_image(
            "d", BASE_DISK, cloudlet_base_memory="m", cloudlet_base_disk_hash="dh",
            cloudlet_base_memory_hash="mh")
        self.mock_image_delete.side_effect = [glance_exceptions.HTTPNotFound("gone"), None,
                                              None, None]
        api.delete_base(mock.Mock(), "d")
        self.assertEqual([c.args[1] for c in self.mock_image_delete.call_args_list],
                         ["m", "dh", "mh", "d"])

    @test.create_mocks({glance: ["image_list_detailed"]})
    def test_base_image_find_takes_the_active_disk_image_of_that_base(self):
        self.mock_image_list_detailed.return_value = (
            [glance_image("mem", "cloudlet_base_memory"),
             glance_image("other", BASE_DISK, base_sha256_uuid="c" * 64),
             glance_image("queued", BASE_DISK, status="queued"),
             glance_image("disk", BASE_DISK)], False, False)
        self.assertEqual(api.base_image_find(mock.Mock(), BASE_ID).id, "disk")
        self.mock_image_list_detailed.assert_called_with(
            mock.ANY, filters={"cloudlet_type": BASE_DISK, "base_sha256_uuid": BASE_ID})
        self.assertIsNone(api.base_image_find(mock.Mock(), "d" * 64))

    @test.create_mocks({glance: ["image_list_detailed"]})
    def test_overlay_list_is_the_projects_overlay_images(self):
        self.mock_image_list_detailed.return_value = (
            [glance_image("ov-1", OVERLAY, instance_uuid="srv-1"),
             glance_image("d", BASE_DISK)], False, False)
        request = mock.Mock()
        request.user.project_id = "p-1"
        got = api.overlay_list(request)
        self.assertEqual([(o.id, o.base_id, o.instance_uuid) for o in got],
                         [("ov-1", BASE_ID, "srv-1")])
        self.mock_image_list_detailed.assert_called_once_with(
            request, filters={"cloudlet_type": OVERLAY, "owner": "p-1"})

    @test.create_mocks({glance: ["image_get", "glanceclient"]})
    def test_download_overlay_streams_glance_data_of_overlays_only(self):
        self.mock_image_get.return_value = glance_image("ov-1", OVERLAY, size=6)
        self.mock_glanceclient.return_value.images.data.return_value = iter([b"abc", b"def"])
        name, size, chunks = api.download_overlay(mock.Mock(), "ov-1")
        self.assertEqual((name, size, b"".join(chunks)), ("ov-1", 6, b"abcdef"))
        self.mock_glanceclient.return_value.images.data.assert_called_once_with("ov-1")
        self.mock_image_get.return_value = glance_image("d", BASE_DISK)
        with self.assertRaisesRegex(CloudletAPIError, "^image d is not a VM overlay$"):
            api.download_overlay(mock.Mock(), "d")

    def test_import_base_runs_the_client_core_over_horizons_glance(self):
        package, base_id = self.base_package()
        self.horizon()
        self.glance_store()

        ids = api.import_base(mock.Mock(), package, name="kb")

        self.assertEqual(set(ids), {"cloudlet_base_disk", "cloudlet_base_memory",
                                    "cloudlet_base_disk_hash", "cloudlet_base_memory_hash"})
        self.assertEqual(set(self.images), set(ids.values()))
        disk = api.base_image_get(mock.Mock(), ids["cloudlet_base_disk"])
        self.assertEqual((disk.name, disk.base_id, disk.status), ("kb-disk", base_id, "active"))
        self.assertEqual(disk.linked, {t: i for t, i in ids.items() if t != BASE_DISK})
        self.assertTrue(all(i.size > 0 for i in self.images.values()))
        # A second import of the same base is refused before anything is uploaded.
        with self.assertRaisesRegex(CloudletAPIError, "base VM %s is already in Glance"
                                    % base_id):
            api.import_base(mock.Mock(), package)
        self.assertEqual(len(self.images), 4)
        api.delete_base(mock.Mock(), ids["cloudlet_base_disk"])
        self.assertEqual(self.images, {})

    def test_failed_import_leaves_no_image(self):
        package, _base_id = self.base_package()
        self.horizon()
        self.glance_store(fail_upload_of="kb-disk")
        with self.assertRaisesRegex(CloudletAPIError,
                                    r"^storage quota full \(HTTP 413\)$"):
            api.import_base(mock.Mock(), package, name="kb")
        self.assertEqual(self.images, {})
        self.assertEqual(self.glance.images.upload.call_count, 4)

    @test.create_mocks({glance: ["glanceclient", "image_delete"]})
    def test_failed_upload_leaves_no_image(self):
        images = self.mock_glanceclient.return_value.images
        images.create.return_value = types.SimpleNamespace(id="new")
        images.upload.side_effect = glance_exceptions.HTTPOverLimit("quota")
        request = mock.Mock()
        with self.assertRaises(glance_exceptions.HTTPOverLimit):
            api.HorizonImages(request).create_image(
                "b-disk", mock.sentinel.data, "raw", "bare", "private",
                allow_duplicates=True, cloudlet_type=BASE_DISK, min_ram=256)
        images.create.assert_called_once_with(name="b-disk", disk_format="raw",
                                              container_format="bare", visibility="private",
                                              cloudlet_type=BASE_DISK, min_ram=256)
        images.upload.assert_called_once_with("new", mock.sentinel.data)
        self.mock_image_delete.assert_called_once_with(request, "new")

    def _destination_session(self, token="dest-token", endpoint="http://dest:8774/v2.1",
                             error=None):
        sess = mock.Mock()
        sess.get_token.side_effect = error
        sess.get_token.return_value = token
        sess.get_endpoint.return_value = endpoint
        return sess

    @test.create_mocks({horizon_nova: ["novaclient"]})
    def test_handoff_gets_token_and_endpoint_from_the_destination_keystone(self):
        post = self.novaclient().client.post
        post.return_value = action_answer({"handoff": "http://dest:8774/v2.1"})
        sess = self._destination_session()
        with mock.patch.object(api.v3, "Password") as password, \
                mock.patch.object(api.ks_session, "Session", return_value=sess) as session:
            got = api.handoff(mock.Mock(), "srv-2", keystone_url="http://dest:5000",
                              username="alice", password="secret", project_name="edge",
                              name="moved")
        self.assertEqual(got, "http://dest:8774/v2.1")
        password.assert_called_once_with(
            auth_url="http://dest:5000/v3", username="alice", password="secret",
            project_name="edge", user_domain_name="Default", project_domain_name="Default")
        session.assert_called_once_with(auth=password.return_value, verify=mock.ANY,
                                        timeout=api.KEYSTONE_TIMEOUT)
        sess.get_endpoint.assert_called_once_with(service_type="compute", interface="public")
        post.assert_called_once_with(
            "/servers/srv-2/action", body={"cloudlet-handoff": {
                "handoff_url": "http://dest:8774/v2.1", "dest_token": "dest-token",
                "dest_vmname": "moved"}})
        self.assert_microversion()

    @test.create_mocks({horizon_nova: ["novaclient"]})
    def test_handoff_without_name_lets_nova_keep_it(self):
        post = self.novaclient().client.post
        post.return_value = action_answer({"handoff": "u"})
        with mock.patch.object(api.v3, "Password"), \
                mock.patch.object(api.ks_session, "Session",
                                  return_value=self._destination_session()):
            api.handoff(mock.Mock(), "srv-2", "https://dest/identity/v3", "a", "p", "e")
        body = post.call_args.kwargs["body"]["cloudlet-handoff"]
        self.assertNotIn("dest_vmname", body)

    @test.create_mocks({horizon_nova: ["novaclient"]})
    def test_handoff_destination_errors(self):
        from keystoneauth1 import exceptions as ks_exceptions
        cases = [(self._destination_session(error=ks_exceptions.Unauthorized("401")),
                  "the destination Keystone http://d:5000/v3 refused the credentials of "
                  "user alice in project edge"),
                 (self._destination_session(error=ks_exceptions.ConnectFailure("refused")),
                  "cannot reach the destination Keystone http://d:5000/v3"),
                 (self._destination_session(endpoint=None),
                  "the destination's catalog lists no public compute endpoint")]
        for sess, text in cases:
            with mock.patch.object(api.v3, "Password"), \
                    mock.patch.object(api.ks_session, "Session", return_value=sess):
                with self.assertRaises(CloudletAPIError) as exc:
                    api.handoff(mock.Mock(), "srv-2", "http://d:5000/v3", "alice", "secret",
                                "edge")
            self.assertEqual(str(exc.exception), text)
            self.assertNotIn("secret", str(exc.exception))
        for url in ("dest:5000/v3", "ftp://d/v3", "file:///etc"):
            with self.assertRaisesRegex(CloudletAPIError, "not an http"):
                api.handoff(mock.Mock(), "srv-2", url, "alice", "secret", "edge")
        self.novaclient().client.post.assert_not_called()

    @test.create_mocks({horizon_nova: ["novaclient"]})
    def test_handoff_reports_the_nova_message(self):
        self.novaclient().client.post.side_effect = nova_exceptions.BadRequest(
            400, "dest_token rejected by the destination")
        with mock.patch.object(api.v3, "Password"), \
                mock.patch.object(api.ks_session, "Session",
                                  return_value=self._destination_session()):
            with self.assertRaisesRegex(CloudletAPIError,
                                        r"^dest_token rejected by the destination "
                                        r"\(HTTP 400\)$"):
                api.handoff(mock.Mock(), "srv-2", "http://d/v3", "a", "p", "e")

    @test.create_mocks({horizon_nova: ["novaclient"]})
    def test_handoff_residue_posts_a_file_url(self):
        post = self.novaclient().client.post
        post.return_value = action_answer({"handoff": "img-7"})
        self.assertEqual(api.handoff_residue(mock.Mock(), "srv-2", "vm2-res"), "img-7")
        post.assert_called_once_with(
            "/servers/srv-2/action",
            body={"cloudlet-handoff": {"handoff_url": "file://vm2-res"}})

    @test.create_mocks({horizon_nova: ["novaclient"]})
    def test_instance_keeps_progress_and_not_found_is_its_own_error(self):
        get = self.novaclient().servers.get
        get.return_value = server("s", status="MIGRATING", task_state="migrating", progress=42)
        self.assertEqual(api.instance_get(mock.Mock(), "s").progress, 42)
        get.side_effect = nova_exceptions.NotFound(404, "No Server found for s")
        with self.assertRaisesRegex(CloudletNotFound, r"^No Server found for s \(HTTP 404\)$"):
            api.instance_get(mock.Mock(), "s")

    @test.create_mocks({horizon_nova: ["novaclient"]})
    def test_synthesize_posts_the_server_with_synthesis_metadata(self):
        create = self.novaclient().servers.create
        create.return_value = types.SimpleNamespace(id="s")   # what POST /servers answers
        got = api.synthesize(mock.Mock(), "syn1", "img-1", "fl-1", overlay_image="ov-1")
        self.assertEqual(got, "s")
        create.assert_called_once_with("syn1", "img-1", "fl-1",
                                       meta={"overlay_image": "ov-1"}, nics="none")
        api.resume_base(mock.Mock(), "vm1", "img-1", "fl-1", "net-1")
        create.assert_called_with("vm1", "img-1", "fl-1", meta=None,
                                  nics=[{"net-id": "net-1"}])
