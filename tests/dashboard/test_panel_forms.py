"""Unit tests of the Cloudlet panel's forms and workflows: Import Base VM, Resume Base VM,
Start VM Synthesis and VM Handoff, with the API module (dashboard_panel.api.cloudlet) mocked."""

import os
from unittest import mock

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from openstack_dashboard.test import helpers as test

from dashboard_panel.api import cloudlet as api
from dashboard_panel.exceptions import CloudletAPIError, CloudletNotFound
from tests.dashboard.panel_helpers import (BASE_ID, FLAVORS, IMPORT_URL, INDEX_URL, RESUME_URL,
                                          SYNTHESIS_URL, PanelTestCase, base, instance, overlay,
                                          zip_bytes)


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
        self.mock_overlay_list.return_value = [overlay(), overlay("ov-2", status="queued")]

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_list"]})
    def test_get(self):
        self.mock_lists()
        res = self.client.get(SYNTHESIS_URL)
        self.assertContains(res, "URL for VM overlay")
        self.assertContains(res, "vm1-overlay")
        self.assertNotContains(res, "ov-2")  # not active: not offered

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_list", "overlay_meta",
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
                                                     "fl-1", self.URL, None, overlay_image=None)

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_list", "overlay_meta",
                              "base_image_find", "synthesize"]})
    def test_post_overlay_image_synthesizes_from_glance(self):
        self.mock_lists()
        self.mock_base_image_find.return_value = base()

        res = self.client.post(SYNTHESIS_URL, {"overlay_image": "ov-1", "name": "syn1",
                                               "flavor": "fl-1", "network": ""})

        self.assertNoWorkflowErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_overlay_meta.assert_not_called()  # the image record names the base
        self.mock_base_image_find.assert_called_once_with(test.IsHttpRequest(), BASE_ID)
        self.mock_synthesize.assert_called_once_with(test.IsHttpRequest(), "syn1", "img-1",
                                                     "fl-1", None, None,
                                                     overlay_image="ov-1")

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_list", "overlay_meta",
                              "base_image_find", "synthesize"]})
    def test_post_needs_exactly_one_overlay(self):
        self.mock_lists()
        for form in ({}, {"overlay_image": "ov-1", "overlay_url": self.URL}):
            res = self.client.post(SYNTHESIS_URL, dict(form, name="syn1", flavor="fl-1"))
            self.assertWorkflowErrors(res, 1, "Choose a VM overlay image or give the URL")
        res = self.client.post(SYNTHESIS_URL, {"overlay_image": "ov-2", "name": "syn1",
                                               "flavor": "fl-1"})
        self.assertWorkflowErrors(res, 1, "Select a valid choice")
        self.mock_overlay_meta.assert_not_called()
        self.mock_synthesize.assert_not_called()

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_list", "overlay_meta",
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

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_list", "overlay_meta",
                              "base_image_find", "synthesize"]})
    def test_post_no_matching_base(self):
        self.mock_lists()
        self.mock_overlay_meta.return_value = {"base_vm_sha256": BASE_ID}
        self.mock_base_image_find.return_value = None

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-1"})

        self.assertWorkflowErrors(res, 1, "The overlay needs base VM %s" % BASE_ID)
        self.mock_synthesize.assert_not_called()

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_list", "overlay_meta",
                              "base_image_find", "synthesize"]})
    def test_post_flavor_too_small(self):
        self.mock_lists()
        self.mock_overlay_meta.return_value = {"base_vm_sha256": BASE_ID}
        self.mock_base_image_find.return_value = base()

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-0"})

        self.assertWorkflowErrors(res, 1, "Flavor too.small is too small")
        self.mock_synthesize.assert_not_called()

    @test.create_mocks({api: ["flavor_list", "network_list", "overlay_list", "overlay_meta",
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

