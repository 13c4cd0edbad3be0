"""nova's snapshot and shelve of cloudlet servers, in-process (fakelibvirt, fake Glance).

A snapshot of a server resumed from a base VM is a plain image of its disk (no base labels,
booting it is a stock boot); shelving such a server stores its VM overlay, and unshelve
synthesizes it. The real-parts version is tests/e2e/test_lifecycle.py.
"""

import io
import os
import uuid
from unittest import mock

import fixtures

from nova.compute import task_states
from nova.virt.libvirt import driver as libvirt_driver

from cloudlet_compute.nova import glance as cloudlet_glance
from cloudlet_compute.errors import ConflictError
from cloudlet_compute.nova import engine_adapter, snapshots
from tests.compute_nova import base

OVERLAY_BYTES = b"PK shelved overlay"


class SnapshotAndShelveTest(base.CloudletTestBase):

    def setUp(self):
        super().setUp()
        self._faithful_purge()
        self.stock_snapshots = []
        self.useFixture(fixtures.MockPatchObject(
            libvirt_driver.LibvirtDriver, "snapshot", side_effect=self._stock_snapshot))
        self.restored_base = self.useFixture(fixtures.MockPatchObject(
            engine_adapter, "restored_base_id", return_value=base.BASE_ID)).mock

    def _faithful_purge(self):
        """nova's fake Glance replaces the whole record on purge_props; nova's real image
        API removes only the properties that were not sent."""
        update = self.glance.update

        def update_removing_props(context, image_id, metadata, data=None, purge_props=False):
            if purge_props:
                image = self.glance.images[image_id]
                image["properties"] = {}
            return update(context, image_id, metadata, data=data, purge_props=False)

        self.glance.update = update_removing_props

    def _stock_snapshot(self, context, instance, image_id, update_task_state):
        """Stands in for the libvirt driver's snapshot: the disk's bytes, active."""
        self.stock_snapshots.append(image_id)
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        update_task_state(task_state=task_states.IMAGE_UPLOADING,
                          expected_state=task_states.IMAGE_PENDING_UPLOAD)
        self.glance.update(context, image_id, {"status": "active"},
                           data=io.BytesIO(b"disk of " + instance.uuid.encode()))

    def _resumed(self):
        return self._boot(image_id=self.base_images[cloudlet_glance.BASE_DISK])

    def test_snapshot_is_a_plain_image_and_boots_as_one(self):
        server = self._resumed()
        self.assertEqual(1, self.engine["resume_into"].call_count)
        image_id = self.api.post_server_action(
            server["id"], {"createImage": {"name": "snap"}})["image_id"]
        self._wait_for_state_change(server, "ACTIVE")
        self.assertEqual([image_id], self.stock_snapshots)
        props = self.glance.show(None, image_id)["properties"]
        self.assertEqual(set(), snapshots.LABELS & set(props))
        self.assertEqual(server["id"], props["instance_uuid"])

        booted = self._boot(image_id=image_id)
        self.assertEqual("ACTIVE", booted["status"])
        self.assertEqual(1, self.engine["resume_into"].call_count)  # no resume of the base
        self.engine["synthesize_into"].assert_not_called()

    def test_shelve_stores_the_overlay_and_unshelve_synthesizes_it(self):
        server = self._resumed()
        captured, synthesized = {}, {}

        def create_overlay(conn, store, domain_name, out_path):
            captured["task_state"] = self._instance(server["id"]).task_state
            with open(out_path, "wb") as f:
                f.write(OVERLAY_BYTES)
            return {"base_vm_sha256": base.BASE_ID}

        def synthesize_into(conn, store, location, base_id, xml, paused=False, policy=None,
                            progress=None):
            with open(location, "rb") as f:
                synthesized["data"] = f.read()
            synthesized["base_id"] = base_id
            base.fake_restore(conn, xml)

        self.engine["create_overlay"].side_effect = create_overlay
        self.engine["synthesize_into"].side_effect = synthesize_into
        self._shelve_server(server)
        self.assertEqual("shelving", captured["task_state"])
        self.assertEqual([], self.stock_snapshots)
        image_id = self._instance(server["id"]).system_metadata["shelved_image_id"]
        self.assertEqual(OVERLAY_BYTES, self.uploads[image_id])
        props = self.glance.show(None, image_id)["properties"]
        self.assertEqual(cloudlet_glance.OVERLAY, props[cloudlet_glance.PROPERTY_TYPE])
        self.assertEqual(base.BASE_ID, props[cloudlet_glance.PROPERTY_BASE_ID])
        self.assertEqual(self.base_images[cloudlet_glance.BASE_DISK],
                         props[cloudlet_glance.BASE_DISK])
        self.assertEqual(self.base_images[cloudlet_glance.BASE_MEMORY],
                         props[cloudlet_glance.BASE_MEMORY])
        self.assertNotIn(cloudlet_glance.BASE_DISK_HASH, props)

        image_api = self.compute.driver._image_api
        with mock.patch.object(image_api, "get", wraps=image_api.get) as get:
            self._unshelve_server(server)
        # spawn reads the shelved overlay's record once (booted image = overlay to fetch).
        self.assertEqual(1, [c.args[1] for c in get.call_args_list].count(image_id))
        self.assertEqual({"data": OVERLAY_BYTES, "base_id": base.BASE_ID}, synthesized)
        self.assertEqual(1, self.engine["resume_into"].call_count)
        self.assertEqual(self.base_images[cloudlet_glance.BASE_DISK],
                         self._instance(server["id"]).image_ref)
        self.assertNotIn(image_id, self.glance.images)  # nova deleted the shelved image
        self.assertEqual([], [n for n in self._tmp_names() if "overlay" in n or "shelve" in n])

    def test_synthesis_from_an_overlay_image_in_glance(self):
        """``overlay_image`` metadata: the compute fetches that image through Glance (issue
        16); nova-api refuses an image that is not an overlay, a missing one, and both keys."""
        synthesized = {}

        def synthesize_into(conn, store, location, base_id, xml, paused=False, policy=None,
                            progress=None):
            with open(location, "rb") as f:
                synthesized["data"] = f.read()
            base.fake_restore(conn, xml)

        self.engine["synthesize_into"].side_effect = synthesize_into
        overlay = self.glance.create(None, {
            "name": "ov", "status": "active", "visibility": "private", "disk_format": "raw",
            "container_format": "bare", "size": len(OVERLAY_BYTES), "properties": {
                cloudlet_glance.PROPERTY_CLOUDLET: "True",
                cloudlet_glance.PROPERTY_TYPE: cloudlet_glance.OVERLAY,
                cloudlet_glance.PROPERTY_BASE_ID: base.BASE_ID}})
        self.glance._imagedata[overlay["id"]] = OVERLAY_BYTES
        disk = self.base_images[cloudlet_glance.BASE_DISK]
        server = self._boot(image_id=disk, metadata={"overlay_image": overlay["id"]})
        self.assertEqual("ACTIVE", server["status"])
        self.assertEqual({"data": OVERLAY_BYTES}, synthesized)
        self.assertEqual([], [n for n in self._tmp_names() if "overlay" in n])

        for metadata, message in (
                ({"overlay_image": disk}, "is not a VM overlay image"),
                ({"overlay_image": str(uuid.uuid4())}, "not found"),
                ({"overlay_image": overlay["id"], "overlay_url": "http://192.0.2.1/o.zip"},
                 "not both")):
            body = self._build_server(image_uuid=disk, networks="none")
            body["metadata"] = metadata
            resp = self.api.api_post("/servers", {"server": body}, check_response_status=False)
            self.assertEqual(400, resp.status, resp.body)
            self.assertIn(message, resp.body["badRequest"]["message"])

    def test_shelve_of_a_guest_not_restored_from_a_base_is_novas(self):
        self.restored_base.return_value = None
        server = self._resumed()
        self._shelve_server(server)
        self.engine["create_overlay"].assert_not_called()
        image_id = self._instance(server["id"]).system_metadata["shelved_image_id"]
        self.assertEqual([image_id], self.stock_snapshots)
        props = self.glance.show(None, image_id)["properties"]
        self.assertEqual(set(), snapshots.LABELS & set(props))

    def test_failed_overlay_capture_leaves_the_server_running(self):
        server = self._resumed()
        self.engine["create_overlay"].side_effect = ConflictError("capture failed")
        resp = self.api.api_post("/servers/%s/action" % server["id"], {"shelve": {}},
                                 check_response_status=False)
        self.assertEqual(500, resp.status)  # the cast ran as a call in this test
        server = self._wait_for_state_change(server, "ACTIVE")
        self.assertIsNone(self._instance(server["id"]).task_state)
        self.assertIn("Cloudlet shelve failed: capture failed", self._faults(server["id"]))
        conn = self.compute.driver._host.get_connection()
        self.assertTrue(conn.lookupByUUIDString(server["id"]).isActive())
        self.assertEqual([], self.stock_snapshots)

    def _tmp_names(self):
        return os.listdir(self.compute.driver.bases.store.tmp_dir)
