"""Unit tests of the Cloudlet panel's index: its three tables and their actions, through the
panel's API module with Horizon's API layer (openstack_dashboard.api) mocked."""

from unittest import mock

from django.urls import reverse
from glanceclient import exc as glance_exceptions
from novaclient import exceptions as nova_exceptions
from openstack_dashboard.test import helpers as test

from tests.dashboard.panel_helpers import (BASE_DISK, INDEX_URL, OVERLAY, SYNTHESIZED,
                                           PanelTestCase, action_answer, base, overlay, server)


class IndexTests(PanelTestCase):

    def test_index_shows_three_tables(self):
        self.horizon(images=[base(), overlay()],
                     servers=[server(), server("srv-2", "vm2", SYNTHESIZED),
                              server("srv-3", "vm3", status="BUILD", task_state="spawning"),
                              server("srv-4", "other", image_id="not-a-base")])

        res = self.client.get(INDEX_URL)

        self.assertTemplateUsed(res, "project/cloudlet/index.html")
        self.assertEqual(len(res.context["images_table"].data), 1)
        self.assertEqual(len(res.context["overlays_table"].data), 1)
        self.assertEqual(len(res.context["instances_table"].data), 3)
        content = res.content.decode()
        for text in ("Base VM Images", "VM Overlays", "Import Base VM", "Resume Base VM",
                     "Download VM overlay", "Start VM Synthesis", "Resumed Base VM",
                     "Synthesized VM", "10.0.0.5", "cl.tiny"):
            self.assertIn(text, content)
        self.assertNotIn("srv-4", content)
        self.assertIn({"cloudlet_type": BASE_DISK}, self.image_queries)
        self.assertIn({"cloudlet_type": OVERLAY, "owner": self.tenant.id}, self.image_queries)
        self.nova.servers.list.assert_called_once_with(detailed=True)

    def test_row_actions_follow_type_and_state(self):
        self.horizon(images=[base(), base("img-2", status="saving"), overlay(),
                             overlay("ov-2", status="queued")],
                     servers=[server(), server("srv-2", "vm2", SYNTHESIZED),
                              server("srv-3", "vm3", task_state="image_uploading")])

        res = self.client.get(INDEX_URL)

        def row_actions(table, index):
            table = res.context[table + "_table"]
            return {a.name for a in table.get_row_actions(table.data[index])}
        self.assertIn("resume", row_actions("images", 0))
        self.assertNotIn("resume", row_actions("images", 1))
        self.assertIn("download", row_actions("overlays", 0))
        self.assertNotIn("download", row_actions("overlays", 1))
        self.assertEqual(row_actions("instances", 0), {"create_overlay", "terminate"})
        self.assertEqual(row_actions("instances", 1), {"handoff", "terminate"})
        self.assertEqual(row_actions("instances", 2), {"terminate"})
        # Rows in a running state refresh themselves by ajax.
        self.assertIn('data-update-url', res.content.decode())

    def test_index_error_shows_reason(self):
        self.horizon()
        self.mock_image_list_detailed.side_effect = glance_exceptions.HTTPServiceUnavailable(
            "glance is down")

        res = self.client.get(INDEX_URL)

        self.assertEqual(res.status_code, 200)
        msgs = [str(m.message) for m in res.context["messages"]]
        self.assertIn("Unable to retrieve base VMs: glance is down (HTTP 503)", msgs)

    def test_instance_row_update(self):
        self.horizon(servers=[server(status="BUILD", task_state="spawning")])

        res = self.client.get(INDEX_URL, {"action": "row_update", "table": "instances",
                                          "obj_id": "srv-1"},
                              HTTP_X_REQUESTED_WITH="XMLHttpRequest")

        self.assertEqual(res.status_code, 200)
        self.assertIn("Spawning", res.content.decode())
        self.nova.servers.get.assert_called_once_with("srv-1")

    def test_overlay_row_update(self):
        self.horizon(images=[overlay(status="saving")])

        res = self.client.get(INDEX_URL, {"action": "row_update", "table": "overlays",
                                          "obj_id": "ov-1"},
                              HTTP_X_REQUESTED_WITH="XMLHttpRequest")

        self.assertIn("Saving", res.content.decode())
        self.mock_image_get.assert_called_once_with(test.IsHttpRequest(), "ov-1")


class TableActionTests(PanelTestCase):

    def post_action(self, action):
        return self.client.post(INDEX_URL, {"action": action})

    def test_delete_base(self):
        self.horizon(images=[base()])

        res = self.post_action("images__delete__img-1")

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_image_delete.assert_called_once_with(test.IsHttpRequest(), "img-1")

    def test_delete_overlay_failure_shows_reason(self):
        self.horizon(images=[overlay()])
        self.mock_image_delete.side_effect = glance_exceptions.HTTPForbidden(
            "image is protected")

        res = self.post_action("overlays__delete__ov-1")

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_image_delete.assert_called_once_with(test.IsHttpRequest(), "ov-1")
        self.assert_message("error", "Unable to delete VM overlay: image is protected")

    def test_create_overlay(self):
        self.horizon(images=[base()], servers=[server()])
        self.nova.client.post.return_value = action_answer({"overlay-id": "ov-9"})

        res = self.post_action("instances__create_overlay__srv-1")

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.nova.client.post.assert_called_once_with(
            "/servers/srv-1/action",
            body={"cloudlet-overlay-finish": {"overlay-name": "vm1-overlay"}})
        self.assert_message("success", "vm1")

    def test_create_overlay_conflict_shows_reason(self):
        self.horizon(images=[base()], servers=[server()])
        self.nova.client.post.side_effect = nova_exceptions.Conflict(
            409, "Cannot 'cloudlet-overlay-finish' instance srv-1 while it is in task_state "
                 "image_uploading")

        res = self.post_action("instances__create_overlay__srv-1")

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assert_message("error", "Unable to create VM overlay: Cannot 'cloudlet-overlay")
        self.assert_message("error", "image_uploading (HTTP 409)")
        self.assertFalse(any("Unable to Create VM Overlay" in t for _, t in self.messages()))

    def test_create_overlay_refused_for_synthesized(self):
        self.horizon(images=[base()], servers=[server(kind=SYNTHESIZED)])

        self.post_action("instances__create_overlay__srv-1")

        self.nova.client.post.assert_not_called()
        self.assert_message("error", "not allowed")

    def test_terminate(self):
        self.horizon(images=[base()], servers=[server(), server("srv-2", "vm2")])

        res = self.client.post(INDEX_URL, {"action": "instances__terminate",
                                           "object_ids": ["srv-1", "srv-2"]})

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assertEqual(self.mock_server_delete.call_args_list,
                         [mock.call(test.IsHttpRequest(), "srv-1"),
                          mock.call(test.IsHttpRequest(), "srv-2")])

    def test_download_overlay_streams(self):
        self.horizon(images=[overlay(size=6)])
        self.glance.images.data.return_value = iter([b"abc", b"def"])

        res = self.client.get(reverse("horizon:project:cloudlet:download", args=["ov-1"]))

        self.assertEqual(res.status_code, 200)
        self.assertEqual(b"".join(res.streaming_content), b"abcdef")
        self.assertEqual(res["Content-Disposition"],
                         'attachment; filename="vm1-overlay.zip"')
        self.assertEqual(res["Content-Length"], "6")
        self.glance.images.data.assert_called_once_with("ov-1")

    def test_download_overlay_failure_redirects(self):
        self.horizon(images=[base("ov-1")])

        res = self.client.get(reverse("horizon:project:cloudlet:download", args=["ov-1"]))

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assert_message("error", "image ov-1 is not a VM overlay")
        self.glance.images.data.assert_not_called()
