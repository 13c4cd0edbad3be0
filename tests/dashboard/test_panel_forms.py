"""Unit tests of the Cloudlet panel's forms and workflows: Import Base VM, Resume Base VM,
Start VM Synthesis and VM Handoff, through the panel's API module with Horizon's API layer
(openstack_dashboard.api) mocked; the overlay URL's meta read (client.core.synthesis) and
the destination Keystone are mocked where a test reaches them."""

import os
from unittest import mock

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from novaclient import exceptions as nova_exceptions
from openstack_dashboard.test import helpers as test

from cloudlet_compute.errors import FetchError
from dashboard_panel.api import cloudlet as api
from tests.dashboard.panel_helpers import (BASE_DISK, BASE_ID, IMPORT_URL, INDEX_URL,
                                           RESUME_URL, SYNTHESIS_URL, SYNTHESIZED,
                                           PanelTestCase, action_answer, base, glance_image,
                                           overlay, server)


class ImportBaseTests(PanelTestCase):

    def test_get(self):
        res = self.client.get(IMPORT_URL)
        self.assertTemplateUsed(res, "project/cloudlet/import.html")
        self.assertContains(res, 'enctype="multipart/form-data"')
        self.assertContains(res, "progress_bar")

    def post_package(self, package, **fields):
        """POST the import form with the bytes of ``package``; return the response and the
        mock that wraps ``client.core.bases.import_base_package``."""
        with open(package, "rb") as f:
            upload = SimpleUploadedFile("base.zip", f.read())
        with mock.patch.object(api.bases, "import_base_package",
                               wraps=api.bases.import_base_package) as core_import:
            res = self.client.post(IMPORT_URL, dict(fields, package=upload))
        return res, core_import

    def test_post_uploads_through_glance(self):
        package, base_id = self.base_package()
        self.horizon()
        self.glance_store()

        res, core_import = self.post_package(package, name="ubuntu-base", public="on")

        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        core_import.assert_called_once_with(mock.ANY, mock.ANY, name="ubuntu-base",
                                            visibility="public")
        path = core_import.call_args.args[1]
        self.assertFalse(os.path.exists(path))  # the upload's scratch is removed
        disk = [i for i in self.images.values() if i.properties["cloudlet_type"] == BASE_DISK]
        self.assertEqual([(d.name, d.properties["base_sha256_uuid"]) for d in disk],
                         [("ubuntu-base-disk", base_id)])
        self.assertEqual({i.visibility for i in self.images.values()}, {"public"})
        self.assertEqual(len(self.images), 4)
        self.assert_message("success", disk[0].id)

    def test_post_not_a_zip(self):
        self.horizon()
        res = self.client.post(IMPORT_URL, {
            "name": "", "package": SimpleUploadedFile("base.zip", b"not a zip")})

        self.assertFormErrors(res, 1)
        self.assertIn("base.zip is not a zip archive", str(res.context["form"].errors))
        self.glance.images.create.assert_not_called()

    def test_post_failure_shows_reason(self):
        package, base_id = self.base_package()
        self.horizon(images=[glance_image("old", BASE_DISK, base_sha256_uuid=base_id)])
        self.glance_store()

        res, core_import = self.post_package(package, name="")

        self.assertRedirectsNoFollow(res, INDEX_URL)
        core_import.assert_called_once_with(mock.ANY, mock.ANY, name=None,
                                            visibility="private")
        self.assert_message("error", "Unable to import base VM: base VM %s is already in "
                                     "Glance" % base_id)
        self.glance.images.create.assert_not_called()
        self.assertEqual(list(self.images), ["old"])


class ResumeBaseTests(PanelTestCase):

    def test_get_lists_flavors_that_fit(self):
        self.horizon(images=[base()], networks=[("net-1", "provider")])

        res = self.client.get(RESUME_URL, {"image_id": "img-1"})

        self.assertTemplateUsed(res, "horizon/common/_workflow_base.html")
        action = res.context["workflow"].steps[0].action
        self.assertEqual([c[0] for c in action.fields["flavor"].choices], ["fl-1", "fl-2"])
        self.assertEqual([c[0] for c in action.fields["network"].choices], ["", "net-1"])
        self.assertEqual(action.fields["base_name"].initial, "tiny-disk")
        self.mock_image_get.assert_called_once_with(test.IsHttpRequest(), "img-1")
        self.mock_network_list.assert_called_once_with(test.IsHttpRequest(), self.tenant.id)

    def test_post_resumes(self):
        self.horizon(images=[base()])
        self.nova.servers.create.return_value = server()

        res = self.client.post(RESUME_URL, {"image_id": "img-1", "name": "vm1",
                                            "flavor": "fl-1", "network": ""})

        self.assertNoWorkflowErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.nova.servers.create.assert_called_once_with("vm1", "img-1", "fl-1", meta=None,
                                                         nics="none")
        self.mock_novaclient.assert_called_with(test.IsHttpRequest(),
                                                version=api.COMPUTE_MICROVERSION)
        self.assert_message("success", 'Resuming base VM as "vm1".')

    def test_post_too_small_flavor_is_refused(self):
        self.horizon(images=[base()])

        res = self.client.post(RESUME_URL, {"image_id": "img-1", "name": "vm1",
                                            "flavor": "fl-0"})

        self.assertWorkflowErrors(res, 1)
        self.nova.servers.create.assert_not_called()

    def test_post_failure_has_reason(self):
        self.horizon(images=[base()], networks=[("net-1", "provider")])
        self.nova.servers.create.side_effect = nova_exceptions.Forbidden(
            403, "Quota exceeded for instances")

        res = self.client.post(RESUME_URL, {"image_id": "img-1", "name": "vm1",
                                            "flavor": "fl-2", "network": "net-1"})

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.nova.servers.create.assert_called_once_with("vm1", "img-1", "fl-2", meta=None,
                                                         nics=[{"net-id": "net-1"}])
        self.assert_message("error", 'Unable to resume base VM as "vm1": Quota exceeded')


class SynthesisTests(PanelTestCase):
    URL = "http://overlays.example/vm1-overlay.zip"

    def setUp(self):
        super().setUp()
        self.read_meta = self._patch(api.synthesis, "read_meta",
                                     return_value={"base_vm_sha256": BASE_ID})

    def cloud(self, images=None):
        self.horizon(images=[base(), overlay(), overlay("ov-2", status="queued")]
                     if images is None else images)
        self.nova.servers.create.return_value = server("syn-1", "syn1", SYNTHESIZED)

    def base_lookups(self):
        """The base ids the panel asked Glance for."""
        return [q["base_sha256_uuid"] for q in self.image_queries if "base_sha256_uuid" in q]

    def test_get(self):
        self.cloud()
        res = self.client.get(SYNTHESIS_URL)
        self.assertContains(res, "URL for VM overlay")
        self.assertContains(res, "vm1-overlay")
        self.assertNotContains(res, "ov-2")  # not active: not offered

    def test_post_finds_base_and_synthesizes(self):
        self.cloud()

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-1", "network": ""})

        self.assertNoWorkflowErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assertEqual(self.read_meta.call_count, 1)
        self.assertEqual(self.read_meta.call_args.args[0], self.URL)
        self.assertEqual(self.base_lookups(), [BASE_ID])
        self.nova.servers.create.assert_called_once_with(
            "syn1", "img-1", "fl-1", meta={"overlay_url": self.URL}, nics="none")

    def test_post_overlay_image_synthesizes_from_glance(self):
        self.cloud()

        res = self.client.post(SYNTHESIS_URL, {"overlay_image": "ov-1", "name": "syn1",
                                               "flavor": "fl-1", "network": ""})

        self.assertNoWorkflowErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.read_meta.assert_not_called()  # the image record names the base
        self.assertEqual(self.base_lookups(), [BASE_ID])
        self.nova.servers.create.assert_called_once_with(
            "syn1", "img-1", "fl-1", meta={"overlay_image": "ov-1"}, nics="none")

    def test_post_needs_exactly_one_overlay(self):
        self.cloud()
        for form in ({}, {"overlay_image": "ov-1", "overlay_url": self.URL}):
            res = self.client.post(SYNTHESIS_URL, dict(form, name="syn1", flavor="fl-1"))
            self.assertWorkflowErrors(res, 1, "Choose a VM overlay image or give the URL")
        res = self.client.post(SYNTHESIS_URL, {"overlay_image": "ov-2", "name": "syn1",
                                               "flavor": "fl-1"})
        self.assertWorkflowErrors(res, 1, "Select a valid choice")
        self.read_meta.assert_not_called()
        self.nova.servers.create.assert_not_called()

    def test_post_unreachable_url(self):
        self.cloud()
        self.read_meta.side_effect = FetchError("cannot reach %s: connection refused"
                                                % self.URL)

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-1"})

        self.assertWorkflowErrors(res, 1, "Cannot use this VM overlay: cannot reach")
        self.assertEqual(self.base_lookups(), [])
        self.nova.servers.create.assert_not_called()

    def test_post_no_matching_base(self):
        self.cloud(images=[overlay()])

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-1"})

        self.assertWorkflowErrors(res, 1, "The overlay needs base VM %s" % BASE_ID)
        self.nova.servers.create.assert_not_called()

    def test_post_flavor_too_small(self):
        self.cloud()

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-0"})

        self.assertWorkflowErrors(res, 1, "Flavor too.small is too small")
        self.nova.servers.create.assert_not_called()

    def test_post_quota_failure_has_reason(self):
        self.cloud()
        self.nova.servers.create.side_effect = nova_exceptions.Forbidden(
            403, "Quota exceeded for cores")

        res = self.client.post(SYNTHESIS_URL, {"overlay_url": self.URL, "name": "syn1",
                                               "flavor": "fl-1"})

        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assert_message("error", 'Unable to start VM synthesis of "syn1": Quota exceeded')


class HandoffTests(PanelTestCase):
    URL = reverse("horizon:project:cloudlet:handoff", args=["srv-2"])
    TO_CLOUD = {"instance_id": "srv-2", "handoff_type": "cloud",
                "dest_keystone": "http://dest:5000/v3", "dest_account": "alice",
                "dest_password": "secret", "dest_project": "edge", "dest_vmname": "moved"}

    def setUp(self):
        super().setUp()
        self.horizon(servers=[server("srv-2", "vm2", SYNTHESIZED)])
        self.nova.client.post.return_value = action_answer({"handoff": "http://dest:8774/v2.1"})
        # The destination Keystone: a token and the public compute endpoint.
        self.password = self._patch(api.v3, "Password")
        session = self._patch(api.ks_session, "Session").return_value
        session.get_token.return_value = "dest-token"
        session.get_endpoint.return_value = "http://dest:8774/v2.1"

    def posted(self):
        """The ``cloudlet-handoff`` bodies posted to Nova."""
        return [(c.args[0], c.kwargs["body"]["cloudlet-handoff"])
                for c in self.nova.client.post.call_args_list]

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

    def test_post_hands_off_to_the_destination(self):
        res = self.client.post(self.URL, self.TO_CLOUD)

        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.password.assert_called_once_with(
            auth_url="http://dest:5000/v3", username="alice", password="secret",
            project_name="edge", user_domain_name="Default", project_domain_name="Default")
        self.assertEqual(self.posted(), [("/servers/srv-2/action", {
            "handoff_url": "http://dest:8774/v2.1", "dest_token": "dest-token",
            "dest_vmname": "moved"})])
        self.assert_message("success", "Handoff of the instance started")
        # The password is not kept anywhere the browser sees.
        self.assertFalse(any("secret" in text for _, text in self.messages()))

    def test_post_without_name_keeps_the_name(self):
        self.client.post(self.URL, dict(self.TO_CLOUD, dest_vmname=""))
        self.assertNotIn("dest_vmname", self.posted()[0][1])

    def test_post_failure_is_the_form_error(self):
        self.nova.client.post.side_effect = nova_exceptions.Conflict(
            409, "the destination has no base VM %s" % BASE_ID)

        res = self.client.post(self.URL, self.TO_CLOUD)

        self.assertEqual(res.status_code, 200)
        self.assertTemplateUsed(res, "project/cloudlet/handoff.html")
        self.assertEqual(res.context["form"].non_field_errors(),
                         ["VM handoff failed: the destination has no base VM %s "
                          "(HTTP 409)" % BASE_ID])
        self.assertContains(res, "the destination has no base VM")
        self.assertNotContains(res, "secret")        # the password is not rendered back

    def test_post_needs_the_destination_fields(self):
        res = self.client.post(self.URL, dict(self.TO_CLOUD, dest_keystone="",
                                              dest_password=""))

        self.assertFormErrors(res, 2)
        self.password.assert_not_called()
        self.nova.client.post.assert_not_called()

    def test_post_residue(self):
        self.nova.client.post.return_value = action_answer({"handoff": "img-7"})

        res = self.client.post(self.URL, {"instance_id": "srv-2", "handoff_type": "residue",
                                          "residue_name": "vm2-residue"})

        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assertEqual(self.posted(), [("/servers/srv-2/action",
                                          {"handoff_url": "file://vm2-residue"})])
        self.password.assert_not_called()
        self.assert_message("success", 'VM overlay "vm2-residue" (image img-7)')

    def test_post_residue_needs_a_name(self):
        res = self.client.post(self.URL, {"instance_id": "srv-2", "handoff_type": "residue",
                                          "residue_name": "a/b"})
        self.assertFormErrors(res, 1)
        self.assertEqual(res.context["form"].errors["residue_name"],
                         ["An image name cannot contain '/'."])
        res = self.client.post(self.URL, {"instance_id": "srv-2", "handoff_type": "residue"})
        self.assertFormErrors(res, 1)
        self.nova.client.post.assert_not_called()

    def test_row_shows_progress_while_migrating(self):
        self.nova.servers.get.side_effect = None
        self.nova.servers.get.return_value = server("srv-2", "vm2", SYNTHESIZED,
                                                    status="MIGRATING",
                                                    task_state="migrating", progress=42)

        res = self.client.get(INDEX_URL, {"action": "row_update", "table": "instances",
                                          "obj_id": "srv-2"},
                              HTTP_X_REQUESTED_WITH="XMLHttpRequest")

        content = res.content.decode()
        self.assertIn("Migrating (42%)", content)
        self.assertIn("data-update-url", content)           # it keeps refreshing
        self.assertNotIn("action_handoff", content)          # busy: no second handoff

    def test_row_of_a_handed_off_instance_is_removed(self):
        # Once the destination runs it, the instance is deleted here: the row update
        # answers 404, on which Horizon's table script removes the row.
        res = self.client.get(INDEX_URL, {"action": "row_update", "table": "instances",
                                          "obj_id": "srv-gone"},
                              HTTP_X_REQUESTED_WITH="XMLHttpRequest")

        self.assertEqual(res.status_code, 404)
        self.nova.servers.get.assert_called_once_with("srv-gone")
