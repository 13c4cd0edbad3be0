"""Unit tests of the Cloudlet panel's API module (dashboard_panel.api.cloudlet) itself, on fake
SDK objects."""

import types
import urllib.parse
from unittest import mock

from dashboard_panel.api import cloudlet as api
from dashboard_panel.exceptions import CloudletAPIError, CloudletNotFound
from tests.dashboard.panel_helpers import BASE_ID, PanelTestCase


class ApiTests(PanelTestCase):
    """The API module's own logic, on fake SDK objects."""

    def test_instance_list_keeps_servers_from_base_images(self):
        def server(sid, image_id, metadata=None):
            return types.SimpleNamespace(
                id=sid, name=sid, status="ACTIVE", task_state=None, power_state=1,
                image={"id": image_id}, flavor={"original_name": "cl.tiny"},
                metadata=metadata or {}, fault=None, created_at=None,
                addresses={"provider": [{"addr": "10.0.0.5"}]})
        conn = mock.Mock()
        conn.image.images.return_value = [
            types.SimpleNamespace(id="img-1", properties={"cloudlet_type": "cloudlet_base_disk"}),
            types.SimpleNamespace(id="other", properties={"cloudlet_type": "cloudlet_overlay"})]
        conn.compute.servers.return_value = [
            server("a", "img-1"), server("b", "other"),
            server("c", "img-1", {"overlay_url": "http://h/o.zip"})]
        request = mock.Mock()
        with mock.patch.object(api, "connection", return_value=conn):
            got = api.instance_list(request)
        self.assertEqual([(i.id, i.cloudlet_type, i.ips, i.power_state) for i in got],
                         [("a", api.RESUMED, ["10.0.0.5"], "RUNNING"),
                          ("c", api.SYNTHESIZED, ["10.0.0.5"], "RUNNING")])
        conn.image.images.assert_called_once_with()

    def test_create_overlay_posts_action_and_reports_nova_message(self):
        conn = mock.Mock()
        conn.compute.post.return_value = mock.Mock(
            status_code=409, json=lambda: {"conflictingRequest": {"message": "busy"}})
        with mock.patch.object(api, "connection", return_value=conn):
            with self.assertRaisesRegex(CloudletAPIError, r"^busy \(HTTP 409\)$"):
                api.create_overlay(mock.Mock(), "srv-1", "ov")
        conn.compute.post.assert_called_once_with(
            "/servers/srv-1/action", json={"cloudlet-overlay-finish": {"overlay-name": "ov"}},
            raise_exc=False)

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

    def test_delete_base_deletes_linked_images_then_disk(self):
        conn = mock.Mock()
        conn.image.get_image.return_value = types.SimpleNamespace(
            id="d", name="b-disk", status="active", visibility="private", min_ram=256,
            min_disk=1, size=1, properties={"cloudlet_base_memory": "m",
                                            "cloudlet_base_disk_hash": "dh",
                                            "cloudlet_base_memory_hash": "mh"})
        with mock.patch.object(api, "connection", return_value=conn):
            api.delete_base(mock.Mock(), "d")
        self.assertEqual(conn.image.delete_image.call_args_list,
                         [mock.call("m", ignore_missing=True),
                          mock.call("dh", ignore_missing=True),
                          mock.call("mh", ignore_missing=True), mock.call("d")])

    def test_base_image_find_takes_the_active_disk_image_of_that_base(self):
        def image(iid, kind, base_id=BASE_ID, status="active"):
            return types.SimpleNamespace(
                id=iid, name=iid, status=status, visibility="private", min_ram=256,
                min_disk=1, size=1, properties={"cloudlet_type": kind,
                                                "base_sha256_uuid": base_id})
        conn = mock.Mock()
        conn.image.images.return_value = [
            image("mem", "cloudlet_base_memory"), image("other", "cloudlet_base_disk", "c" * 64),
            image("queued", "cloudlet_base_disk", status="queued"),
            image("disk", "cloudlet_base_disk")]
        with mock.patch.object(api, "connection", return_value=conn):
            self.assertEqual(api.base_image_find(mock.Mock(), BASE_ID).id, "disk")
            self.assertIsNone(api.base_image_find(mock.Mock(), "d" * 64))

    def _destination_session(self, token="dest-token", endpoint="http://dest:8774/v2.1",
                             error=None):
        sess = mock.Mock()
        sess.get_token.side_effect = error
        sess.get_token.return_value = token
        sess.get_endpoint.return_value = endpoint
        return sess

    def test_handoff_gets_token_and_endpoint_from_the_destination_keystone(self):
        conn = mock.Mock()
        conn.compute.post.return_value = mock.Mock(
            status_code=202, json=lambda: {"handoff": "http://dest:8774/v2.1"})
        sess = self._destination_session()
        with mock.patch.object(api, "connection", return_value=conn), \
                mock.patch.object(api.v3, "Password") as password, \
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
        conn.compute.post.assert_called_once_with(
            "/servers/srv-2/action", json={"cloudlet-handoff": {
                "handoff_url": "http://dest:8774/v2.1", "dest_token": "dest-token",
                "dest_vmname": "moved"}}, raise_exc=False)

    def test_handoff_without_name_lets_nova_keep_it(self):
        conn = mock.Mock()
        conn.compute.post.return_value = mock.Mock(status_code=202,
                                                   json=lambda: {"handoff": "u"})
        with mock.patch.object(api, "connection", return_value=conn), \
                mock.patch.object(api.v3, "Password"), \
                mock.patch.object(api.ks_session, "Session",
                                  return_value=self._destination_session()):
            api.handoff(mock.Mock(), "srv-2", "https://dest/identity/v3", "a", "p", "e")
        body = conn.compute.post.call_args.kwargs["json"]["cloudlet-handoff"]
        self.assertNotIn("dest_vmname", body)

    def test_handoff_destination_errors(self):
        from keystoneauth1 import exceptions as ks_exceptions
        conn = mock.Mock()
        cases = [(self._destination_session(error=ks_exceptions.Unauthorized("401")),
                  "the destination Keystone http://d:5000/v3 refused the credentials of "
                  "user alice in project edge"),
                 (self._destination_session(error=ks_exceptions.ConnectFailure("refused")),
                  "cannot reach the destination Keystone http://d:5000/v3"),
                 (self._destination_session(endpoint=None),
                  "the destination's catalog lists no public compute endpoint")]
        for sess, text in cases:
            with mock.patch.object(api, "connection", return_value=conn), \
                    mock.patch.object(api.v3, "Password"), \
                    mock.patch.object(api.ks_session, "Session", return_value=sess):
                with self.assertRaises(CloudletAPIError) as exc:
                    api.handoff(mock.Mock(), "srv-2", "http://d:5000/v3", "alice", "secret",
                                "edge")
            self.assertEqual(str(exc.exception), text)
            self.assertNotIn("secret", str(exc.exception))
        for url in ("dest:5000/v3", "ftp://d/v3", "file:///etc"):
            with self.assertRaisesRegex(CloudletAPIError, "not an http"):
                api.handoff(mock.Mock(), "srv-2", url, "alice", "secret", "edge")
        conn.compute.post.assert_not_called()

    def test_handoff_reports_the_nova_message(self):
        conn = mock.Mock()
        conn.compute.post.return_value = mock.Mock(
            status_code=400, json=lambda: {"badRequest": {
                "message": "dest_token rejected by the destination"}})
        with mock.patch.object(api, "connection", return_value=conn), \
                mock.patch.object(api.v3, "Password"), \
                mock.patch.object(api.ks_session, "Session",
                                  return_value=self._destination_session()):
            with self.assertRaisesRegex(CloudletAPIError,
                                        r"^dest_token rejected by the destination "
                                        r"\(HTTP 400\)$"):
                api.handoff(mock.Mock(), "srv-2", "http://d/v3", "a", "p", "e")

    def test_handoff_residue_posts_a_file_url(self):
        conn = mock.Mock()
        conn.compute.post.return_value = mock.Mock(status_code=202,
                                                   json=lambda: {"handoff": "img-7"})
        with mock.patch.object(api, "connection", return_value=conn):
            self.assertEqual(api.handoff_residue(mock.Mock(), "srv-2", "vm2-res"), "img-7")
        conn.compute.post.assert_called_once_with(
            "/servers/srv-2/action",
            json={"cloudlet-handoff": {"handoff_url": "file://vm2-res"}}, raise_exc=False)

    def test_instance_keeps_progress_and_not_found_is_its_own_error(self):
        from openstack import exceptions as sdk_exceptions
        conn = mock.Mock()
        conn.compute.get_server.return_value = types.SimpleNamespace(
            id="s", name="s", status="MIGRATING", task_state="migrating", progress=42,
            power_state=1, image={"id": "img-1"}, flavor={}, metadata={}, fault=None,
            created_at=None, addresses={})
        with mock.patch.object(api, "connection", return_value=conn):
            self.assertEqual(api.instance_get(mock.Mock(), "s").progress, 42)
            conn.compute.get_server.side_effect = sdk_exceptions.NotFoundException(
                message="No Server found for s")
            with self.assertRaises(CloudletNotFound):
                api.instance_get(mock.Mock(), "s")
