"""Unit tests of the Cloudlet panel: views, forms, workflows and table actions, with the
API module (dashboard_panel.api.cloudlet) mocked."""

import io
import os
import types
import zipfile
from unittest import mock

from django.contrib.messages.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from openstack_dashboard.test import helpers as test

from dashboard_panel.api import cloudlet as api
from dashboard_panel.exceptions import CloudletAPIError, CloudletNotFound

INDEX_URL = reverse("horizon:project:cloudlet:index")
IMPORT_URL = reverse("horizon:project:cloudlet:import")
RESUME_URL = reverse("horizon:project:cloudlet:resume")
SYNTHESIS_URL = reverse("horizon:project:cloudlet:synthesis")
BASE_ID = "b" * 64


def base(image_id="img-1", name="tiny-disk", status="active", min_ram=256, min_disk=1):
    return types.SimpleNamespace(id=image_id, name=name, status=status, base_id=BASE_ID,
                                 is_public=False, visibility="private", min_ram=min_ram,
                                 min_disk=min_disk, size=64 << 20, image_type="snapshot",
                                 linked={})


def overlay(image_id="ov-1", name="vm1-overlay", status="active"):
    return types.SimpleNamespace(id=image_id, name=name, status=status, base_id=BASE_ID,
                                 size=5 << 20, instance_uuid="srv-1", created_at=None)


def instance(server_id="srv-1", name="vm1", kind=api.RESUMED, status="ACTIVE",
             task_state=None):
    return types.SimpleNamespace(
        id=server_id, name=name, status=status, task_state=task_state, progress=0,
        power_state="RUNNING", image_id="img-1", flavor_name="cl.tiny", metadata={},
        overlay_url="http://h/o.zip" if kind == api.SYNTHESIZED else None,
        cloudlet_type=kind, fault=None, ips=[], created_at=None)


def flavor(flavor_id, name, ram, disk, vcpus=1):
    return types.SimpleNamespace(id=flavor_id, name=name, ram=ram, disk=disk, vcpus=vcpus)


FLAVORS = [flavor("fl-0", "too.small", 128, 1), flavor("fl-1", "cl.tiny", 256, 1),
           flavor("fl-2", "cl.small", 512, 2)]


def zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("basevm-package.json", "{}")
    return buf.getvalue()


class PanelTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        patcher = mock.patch.object(api, "connection",
                                    side_effect=AssertionError("a unit test reached OpenStack"))
        patcher.start()
        self.addCleanup(patcher.stop)

    def messages(self):
        """``[(level tag, text)]`` of the messages queued in the test client's cookie."""
        if "messages" not in self.client.cookies:
            return []
        storage = default_storage(self.client.request().wsgi_request)
        decoded = storage._decode(self.client.cookies["messages"].value) or []
        return [(m.tags, str(m.message)) for m in decoded]

    def assert_message(self, level, fragment):
        msgs = self.messages()
        self.assertTrue(any(level in tags and fragment in text for tags, text in msgs), msgs)


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


class ImportBaseTests(PanelTestCase):

    def test_get(self):
        res = self.client.get(IMPORT_URL)
        self.assertTemplateUsed(res, "project/cloudlet/import.html")
        self.assertContains(res, 'enctype="multipart/form-data"')
        self.assertContains(res, "progress_bar")

    @test.create_mocks({api: ["import_base"]})
    def test_post_uploads_through_glance_import(self):
        seen = {}

        def import_base(request, path, name=None, visibility=None):
            with open(path, "rb") as f:
                seen["data"] = f.read()
            seen["path"] = path
            return {"cloudlet_base_disk": "img-9"}
        self.mock_import_base.side_effect = import_base

        res = self.client.post(IMPORT_URL, {
            "name": "ubuntu-base", "public": "on",
            "package": SimpleUploadedFile("base.zip", zip_bytes())})

        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_import_base.assert_called_once_with(
            test.IsHttpRequest(), seen["path"], name="ubuntu-base", visibility="public")
        self.assertEqual(seen["data"], zip_bytes())
        self.assertFalse(os.path.exists(seen["path"]))  # the upload's scratch is removed
        self.assert_message("success", "img-9")

    @test.create_mocks({api: ["import_base"]})
    def test_post_not_a_zip(self):
        res = self.client.post(IMPORT_URL, {
            "name": "", "package": SimpleUploadedFile("base.zip", b"not a zip")})

        self.assertFormErrors(res, 1)
        self.assertIn("base.zip is not a zip archive", str(res.context["form"].errors))
        self.mock_import_base.assert_not_called()

    @test.create_mocks({api: ["import_base"]})
    def test_post_failure_shows_reason(self):
        self.mock_import_base.side_effect = CloudletAPIError(
            "base VM %s is already in Glance" % BASE_ID)

        res = self.client.post(IMPORT_URL, {
            "name": "", "package": SimpleUploadedFile("base.zip", zip_bytes())})

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_import_base.assert_called_once_with(
            test.IsHttpRequest(), mock.ANY, name=None, visibility="private")
        self.assert_message("error", "Unable to import base VM: base VM %s is already in "
                                     "Glance" % BASE_ID)


class ResumeBaseTests(PanelTestCase):

    @test.create_mocks({api: ["base_image_get", "flavor_list", "network_list"]})
    def test_get_lists_flavors_that_fit(self):
        self.mock_base_image_get.return_value = base()
        self.mock_flavor_list.return_value = FLAVORS
        self.mock_network_list.return_value = [("net-1", "provider")]

        res = self.client.get(RESUME_URL, {"image_id": "img-1"})

        self.assertTemplateUsed(res, "horizon/common/_workflow_base.html")
        action = res.context["workflow"].steps[0].action
        self.assertEqual([c[0] for c in action.fields["flavor"].choices], ["fl-1", "fl-2"])
        self.assertEqual([c[0] for c in action.fields["network"].choices], ["", "net-1"])
        self.assertEqual(action.fields["base_name"].initial, "tiny-disk")
        self.mock_base_image_get.assert_called_once_with(test.IsHttpRequest(), "img-1")

    @test.create_mocks({api: ["base_image_get", "flavor_list", "network_list",
                              "resume_base"]})
    def test_post_resumes(self):
        self.mock_base_image_get.return_value = base()
        self.mock_flavor_list.return_value = FLAVORS
        self.mock_network_list.return_value = []

        res = self.client.post(RESUME_URL, {"image_id": "img-1", "name": "vm1",
                                            "flavor": "fl-1", "network": ""})

        self.assertNoWorkflowErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_resume_base.assert_called_once_with(test.IsHttpRequest(), "vm1", "img-1",
                                                      "fl-1", None)
        self.assert_message("success", 'Resuming base VM as "vm1".')

    @test.create_mocks({api: ["base_image_get", "flavor_list", "network_list",
                              "resume_base"]})
    def test_post_too_small_flavor_is_refused(self):
        self.mock_base_image_get.return_value = base()
        self.mock_flavor_list.return_value = FLAVORS
        self.mock_network_list.return_value = []

        res = self.client.post(RESUME_URL, {"image_id": "img-1", "name": "vm1",
                                            "flavor": "fl-0"})

        self.assertWorkflowErrors(res, 1)
        self.mock_resume_base.assert_not_called()

    @test.create_mocks({api: ["base_image_get", "flavor_list", "network_list",
                              "resume_base"]})
    def test_post_failure_has_reason(self):
        self.mock_base_image_get.return_value = base()
        self.mock_flavor_list.return_value = FLAVORS
        self.mock_network_list.return_value = [("net-1", "provider")]
        self.mock_resume_base.side_effect = CloudletAPIError("Quota exceeded for instances")

        res = self.client.post(RESUME_URL, {"image_id": "img-1", "name": "vm1",
                                            "flavor": "fl-2", "network": "net-1"})

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_resume_base.assert_called_once_with(test.IsHttpRequest(), "vm1", "img-1",
                                                      "fl-2", "net-1")
        self.assert_message("error", 'Unable to resume base VM as "vm1": Quota exceeded')


class SynthesisTests(PanelTestCase):
    URL = "http://overlays.example/vm1-overlay.zip"

    def mock_lists(self):
        self.mock_flavor_list.return_value = FLAVORS
        self.mock_network_list.return_value = []

    @test.create_mocks({api: ["flavor_list", "network_list"]})
    def test_get(self):
        self.mock_lists()
        res = self.client.get(SYNTHESIS_URL)
        self.assertContains(res, "URL for VM overlay")

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_meta",
                              "base_image_find", "synthesize"]})
    def test_post_finds_base_and_synthesizes(self):
        self.mock_lists()
        self.mock_overlay_meta.return_value = {"base_vm_sha256": BASE_ID}
        self.mock_base_image_find.return_value = base()

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-1", "network": ""})

        self.assertNoWorkflowErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_overlay_meta.assert_called_once_with(test.IsHttpRequest(), self.URL)
        self.mock_base_image_find.assert_called_once_with(test.IsHttpRequest(), BASE_ID)
        self.mock_synthesize.assert_called_once_with(test.IsHttpRequest(), "syn1", "img-1",
                                                     "fl-1", self.URL, None)

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_meta",
                              "base_image_find", "synthesize"]})
    def test_post_unreachable_url(self):
        self.mock_lists()
        self.mock_overlay_meta.side_effect = CloudletAPIError(
            "cannot reach %s: connection refused" % self.URL)

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-1"})

        self.assertWorkflowErrors(res, 1, "Cannot use this VM overlay: cannot reach")
        self.mock_base_image_find.assert_not_called()
        self.mock_synthesize.assert_not_called()

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_meta",
                              "base_image_find", "synthesize"]})
    def test_post_no_matching_base(self):
        self.mock_lists()
        self.mock_overlay_meta.return_value = {"base_vm_sha256": BASE_ID}
        self.mock_base_image_find.return_value = None

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-1"})

        self.assertWorkflowErrors(res, 1, "The overlay needs base VM %s" % BASE_ID)
        self.mock_synthesize.assert_not_called()

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_meta",
                              "base_image_find", "synthesize"]})
    def test_post_flavor_too_small(self):
        self.mock_lists()
        self.mock_overlay_meta.return_value = {"base_vm_sha256": BASE_ID}
        self.mock_base_image_find.return_value = base()

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-0"})

        self.assertWorkflowErrors(res, 1, "Flavor too.small is too small")
        self.mock_synthesize.assert_not_called()

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_meta",
                              "base_image_find", "synthesize"]})
    def test_post_quota_failure_has_reason(self):
        self.mock_lists()
        self.mock_overlay_meta.return_value = {"base_vm_sha256": BASE_ID}
        self.mock_base_image_find.return_value = base()
        self.mock_synthesize.side_effect = CloudletAPIError("Quota exceeded for cores")

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-1"})

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assert_message("error", 'Unable to start VM synthesis of "syn1": Quota exceeded')


class HandoffTests(PanelTestCase):
    URL = reverse("horizon:project:cloudlet:handoff", args=["srv-2"])
    TO_CLOUD = {"instance_id": "srv-2", "handoff_type": "cloud",
                "dest_keystone": "http://dest:5000/v3", "dest_account": "alice",
                "dest_password": "secret", "dest_project": "edge", "dest_vmname": "moved"}

    def test_get_shows_the_form(self):
        res = self.client.get(self.URL)
        self.assertTemplateUsed(res, "project/cloudlet/handoff.html")
        self.assertNotContains(res, "not available yet")
        form = res.context["form"]
        self.assertEqual(form.initial["instance_id"], "srv-2")
        self.assertEqual([c[0] for c in form.fields["handoff_type"].choices],
                         ["cloud", "residue"])
        for name in ("dest_keystone", "dest_account", "dest_password", "dest_project",
                     "dest_vmname", "residue_name"):
            self.assertIn(name, form.fields)
        self.assertContains(res, "A VM overlay in Glance")

    @test.create_mocks({api: ["handoff", "handoff_residue"]})
    def test_post_hands_off_to_the_destination(self):
        self.mock_handoff.return_value = "http://dest:8774/v2.1"

        res = self.client.post(self.URL, self.TO_CLOUD)

        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_handoff.assert_called_once_with(
            test.IsHttpRequest(), "srv-2", keystone_url="http://dest:5000/v3",
            username="alice", password="secret", project_name="edge", name="moved")
        self.mock_handoff_residue.assert_not_called()
        self.assert_message("success", "Handoff of the instance started")
        # The password is not kept anywhere the browser sees.
        self.assertFalse(any("secret" in text for _, text in self.messages()))

    @test.create_mocks({api: ["handoff"]})
    def test_post_without_name_keeps_the_name(self):
        self.client.post(self.URL, dict(self.TO_CLOUD, dest_vmname=""))
        self.assertIsNone(self.mock_handoff.call_args.kwargs["name"])

    @test.create_mocks({api: ["handoff"]})
    def test_post_failure_is_the_form_error(self):
        self.mock_handoff.side_effect = CloudletAPIError(
            "the destination has no base VM %s (HTTP 409)" % BASE_ID)

        res = self.client.post(self.URL, self.TO_CLOUD)

        self.assertEqual(res.status_code, 200)
        self.assertTemplateUsed(res, "project/cloudlet/handoff.html")
        self.assertEqual(res.context["form"].non_field_errors(),
                         ["VM handoff failed: the destination has no base VM %s "
                          "(HTTP 409)" % BASE_ID])
        self.assertContains(res, "the destination has no base VM")
        self.assertNotContains(res, "secret")        # the password is not rendered back

    @test.create_mocks({api: ["handoff", "handoff_residue"]})
    def test_post_needs_the_destination_fields(self):
        res = self.client.post(self.URL, dict(self.TO_CLOUD, dest_keystone="",
                                              dest_password=""))

        self.assertFormErrors(res, 2)
        self.mock_handoff.assert_not_called()

    @test.create_mocks({api: ["handoff", "handoff_residue"]})
    def test_post_residue(self):
        self.mock_handoff_residue.return_value = "img-7"

        res = self.client.post(self.URL, {"instance_id": "srv-2", "handoff_type": "residue",
                                          "residue_name": "vm2-residue"})

        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_handoff_residue.assert_called_once_with(test.IsHttpRequest(), "srv-2",
                                                          "vm2-residue")
        self.mock_handoff.assert_not_called()
        self.assert_message("success", 'VM overlay "vm2-residue" (image img-7)')

    @test.create_mocks({api: ["handoff", "handoff_residue"]})
    def test_post_residue_needs_a_name(self):
        res = self.client.post(self.URL, {"instance_id": "srv-2", "handoff_type": "residue",
                                          "residue_name": "a/b"})
        self.assertFormErrors(res, 1)
        self.assertEqual(res.context["form"].errors["residue_name"],
                         ["An image name cannot contain '/'."])
        res = self.client.post(self.URL, {"instance_id": "srv-2", "handoff_type": "residue"})
        self.assertFormErrors(res, 1)
        self.mock_handoff_residue.assert_not_called()

    @test.create_mocks({api: ["instance_get"]})
    def test_row_shows_progress_while_migrating(self):
        migrating = instance("srv-2", "vm2", api.SYNTHESIZED, status="MIGRATING",
                             task_state="migrating")
        migrating.progress = 42
        self.mock_instance_get.return_value = migrating

        res = self.client.get(INDEX_URL, {"action": "row_update", "table": "instances",
                                          "obj_id": "srv-2"},
                              HTTP_X_REQUESTED_WITH="XMLHttpRequest")

        content = res.content.decode()
        self.assertIn("Migrating (42%)", content)
        self.assertIn("data-update-url", content)           # it keeps refreshing
        self.assertNotIn("action_handoff", content)          # busy: no second handoff

    @test.create_mocks({api: ["instance_get"]})
    def test_row_of_a_handed_off_instance_is_removed(self):
        # Once the destination runs it, the instance is deleted here: the row update
        # answers 404, on which Horizon's table script removes the row.
        self.mock_instance_get.side_effect = CloudletNotFound("No Server found for srv-2")

        res = self.client.get(INDEX_URL, {"action": "row_update", "table": "instances",
                                          "obj_id": "srv-2"},
                              HTTP_X_REQUESTED_WITH="XMLHttpRequest")

        self.assertEqual(res.status_code, 404)


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
