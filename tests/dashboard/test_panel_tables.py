"""Unit tests of the Cloudlet panel's index: its three tables and their actions, with the
API module (dashboard_panel.api.cloudlet) mocked."""

from unittest import mock

from django.urls import reverse
from openstack_dashboard.test import helpers as test

from dashboard_panel.api import cloudlet as api
from dashboard_panel.exceptions import CloudletAPIError
from tests.dashboard.panel_helpers import INDEX_URL, PanelTestCase, base, instance, overlay


class IndexTests(PanelTestCase):

    @test.create_mocks({api: ["base_image_list", "overlay_list", "instance_list"]})
    def test_index_shows_three_tables(self):
        self.mock_base_image_list.return_value = [base()]
        self.mock_overlay_list.return_value = [overlay()]
        self.mock_instance_list.return_value = [
            instance(), instance("srv-2", "vm2", api.SYNTHESIZED),
            instance("srv-3", "vm3", status="BUILD", task_state="spawning")]

        res = self.client.get(INDEX_URL)

        self.assertTemplateUsed(res, "project/cloudlet/index.html")
        self.assertEqual(len(res.context["images_table"].data), 1)
        self.assertEqual(len(res.context["overlays_table"].data), 1)
        self.assertEqual(len(res.context["instances_table"].data), 3)
        content = res.content.decode()
        for text in ("Base VM Images", "VM Overlays", "Import Base VM", "Resume Base VM",
                     "Download VM overlay", "Start VM Synthesis", "Resumed Base VM",
                     "Synthesized VM"):
            self.assertIn(text, content)
        self.mock_base_image_list.assert_called_once_with(test.IsHttpRequest())
        self.mock_overlay_list.assert_called_once_with(test.IsHttpRequest())
        self.mock_instance_list.assert_called_once_with(test.IsHttpRequest())

    @test.create_mocks({api: ["base_image_list", "overlay_list", "instance_list"]})
    def test_row_actions_follow_type_and_state(self):
        self.mock_base_image_list.return_value = [base(), base("img-2", status="saving")]
        self.mock_overlay_list.return_value = [overlay(), overlay("ov-2", status="queued")]
        self.mock_instance_list.return_value = [
            instance(), instance("srv-2", "vm2", api.SYNTHESIZED),
            instance("srv-3", "vm3", task_state="image_uploading")]

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

    @test.create_mocks({api: ["base_image_list", "overlay_list", "instance_list"]})
    def test_index_error_shows_reason(self):
        self.mock_base_image_list.side_effect = CloudletAPIError("glance is down")
        self.mock_overlay_list.return_value = []
        self.mock_instance_list.return_value = []

        res = self.client.get(INDEX_URL)

        self.assertEqual(res.status_code, 200)
        msgs = [str(m.message) for m in res.context["messages"]]
        self.assertIn("Unable to retrieve base VMs: glance is down", msgs)

    @test.create_mocks({api: ["instance_get"]})
    def test_instance_row_update(self):
        self.mock_instance_get.return_value = instance(status="BUILD", task_state="spawning")

        res = self.client.get(INDEX_URL, {"action": "row_update", "table": "instances",
                                          "obj_id": "srv-1"},
                              HTTP_X_REQUESTED_WITH="XMLHttpRequest")

        self.assertEqual(res.status_code, 200)
        self.assertIn("Spawning", res.content.decode())
        self.mock_instance_get.assert_called_once_with(test.IsHttpRequest(), "srv-1")

    @test.create_mocks({api: ["overlay_get"]})
    def test_overlay_row_update(self):
        self.mock_overlay_get.return_value = overlay(status="saving")

        res = self.client.get(INDEX_URL, {"action": "row_update", "table": "overlays",
                                          "obj_id": "ov-1"},
                              HTTP_X_REQUESTED_WITH="XMLHttpRequest")

        self.assertIn("Saving", res.content.decode())
        self.mock_overlay_get.assert_called_once_with(test.IsHttpRequest(), "ov-1")


class TableActionTests(PanelTestCase):

    def post_action(self, action):
        return self.client.post(INDEX_URL, {"action": action})

    @test.create_mocks({api: ["base_image_list", "overlay_list", "instance_list",
                              "delete_base"]})
    def test_delete_base(self):
        self.mock_base_image_list.return_value = [base()]
        self.mock_overlay_list.return_value = []
        self.mock_instance_list.return_value = []

        res = self.post_action("images__delete__img-1")

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_delete_base.assert_called_once_with(test.IsHttpRequest(), "img-1")

    @test.create_mocks({api: ["base_image_list", "overlay_list", "instance_list",
                              "delete_overlay"]})
    def test_delete_overlay_failure_shows_reason(self):
        self.mock_base_image_list.return_value = []
        self.mock_overlay_list.return_value = [overlay()]
        self.mock_instance_list.return_value = []
        self.mock_delete_overlay.side_effect = CloudletAPIError("image is protected")

        res = self.post_action("overlays__delete__ov-1")

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_delete_overlay.assert_called_once_with(test.IsHttpRequest(), "ov-1")
        self.assert_message("error", "Unable to delete VM overlay: image is protected")

    @test.create_mocks({api: ["base_image_list", "overlay_list", "instance_list",
                              "create_overlay"]})
    def test_create_overlay(self):
        self.mock_base_image_list.return_value = []
        self.mock_overlay_list.return_value = []
        self.mock_instance_list.return_value = [instance()]
        self.mock_create_overlay.return_value = "ov-9"

        res = self.post_action("instances__create_overlay__srv-1")

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_create_overlay.assert_called_once_with(test.IsHttpRequest(), "srv-1",
                                                         "vm1-overlay")
        self.assert_message("success", "vm1")

    @test.create_mocks({api: ["base_image_list", "overlay_list", "instance_list",
                              "create_overlay"]})
    def test_create_overlay_conflict_shows_reason(self):
        self.mock_base_image_list.return_value = []
        self.mock_overlay_list.return_value = []
        self.mock_instance_list.return_value = [instance()]
        self.mock_create_overlay.side_effect = CloudletAPIError(
            "Cannot 'cloudlet-overlay-finish' instance srv-1 while it is in task_state "
            "image_uploading (HTTP 409)")

        res = self.post_action("instances__create_overlay__srv-1")

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assert_message("error", "Unable to create VM overlay: Cannot 'cloudlet-overlay")
        self.assertFalse(any("Unable to Create VM Overlay" in t for _, t in self.messages()))

    @test.create_mocks({api: ["base_image_list", "overlay_list", "instance_list",
                              "create_overlay"]})
    def test_create_overlay_refused_for_synthesized(self):
        self.mock_base_image_list.return_value = []
        self.mock_overlay_list.return_value = []
        self.mock_instance_list.return_value = [instance(kind=api.SYNTHESIZED)]

        self.post_action("instances__create_overlay__srv-1")

        self.mock_create_overlay.assert_not_called()
        self.assert_message("error", "not allowed")

    @test.create_mocks({api: ["base_image_list", "overlay_list", "instance_list",
                              "instance_delete"]})
    def test_terminate(self):
        self.mock_base_image_list.return_value = []
        self.mock_overlay_list.return_value = []
        self.mock_instance_list.return_value = [instance(), instance("srv-2", "vm2")]

        res = self.client.post(INDEX_URL, {"action": "instances__terminate",
                                           "object_ids": ["srv-1", "srv-2"]})

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assertEqual(self.mock_instance_delete.call_args_list,
                         [mock.call(test.IsHttpRequest(), "srv-1"),
                          mock.call(test.IsHttpRequest(), "srv-2")])

    @test.create_mocks({api: ["download_overlay"]})
    def test_download_overlay_streams(self):
        self.mock_download_overlay.return_value = ("vm1-overlay", 6, iter([b"abc", b"def"]))

        res = self.client.get(reverse("horizon:project:cloudlet:download", args=["ov-1"]))

        self.assertEqual(res.status_code, 200)
        self.assertEqual(b"".join(res.streaming_content), b"abcdef")
        self.assertEqual(res["Content-Disposition"],
                         'attachment; filename="vm1-overlay.zip"')
        self.assertEqual(res["Content-Length"], "6")
        self.mock_download_overlay.assert_called_once_with(test.IsHttpRequest(), "ov-1")

    @test.create_mocks({api: ["download_overlay"]})
    def test_download_overlay_failure_redirects(self):
        self.mock_download_overlay.side_effect = CloudletAPIError("image ov-1 is not a VM "
                                                                  "overlay")

        res = self.client.get(reverse("horizon:project:cloudlet:download", args=["ov-1"]))

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assert_message("error", "is not a VM overlay")

