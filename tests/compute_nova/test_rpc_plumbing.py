"""API -> RPC (cloudlet namespace) -> CloudletEndpoint in nova-compute -> CloudletDriver.

All in-process on nova's functional framework: the cast crosses oslo.messaging's fake
driver (as a call, nova's CastAsCallFixture) into the compute service, whose RPC server
serves the endpoint that CloudletDriver registered through ``virtapi._compute``. The
engine is replaced behind ``engine_adapter``.
"""

import json
import os
from types import SimpleNamespace
from unittest import mock

from nova.compute import task_states

from cloudlet_api import servers
from cloudlet_compute.nova import basecache
from cloudlet_compute.nova import glance as cloudlet_glance
from cloudlet_compute import imagemodel
from cloudlet_compute.errors import ConflictError
from cloudlet_compute.nova import rpc as cloudlet_rpc
from tests.compute_nova import base


class RPCPlumbingTest(base.CloudletTestBase):

    def test_endpoint_is_served_by_the_compute_service(self):
        manager = self.compute.manager
        endpoints = [e for e in manager.additional_endpoints
                     if isinstance(e, cloudlet_rpc.CloudletEndpoint)]
        self.assertEqual(1, len(endpoints))
        self.assertIs(manager.driver, endpoints[0].driver)
        self.assertEqual(("cloudlet", "1.1"),
                         (endpoints[0].target.namespace, endpoints[0].target.version))
        served = self.compute.rpcserver.dispatcher.endpoints
        self.assertIn(endpoints[0], [getattr(e, "_endpoint", e) for e in served])

    def test_spawn_resume_and_synthesis(self):
        disk_image = self.base_images[cloudlet_glance.BASE_DISK]
        resumed = self._boot(image_id=disk_image)
        (_conn, _store, base_id, xml), kwargs = self.engine["resume_into"].call_args
        self.assertEqual(base.BASE_ID, base_id)
        self.assertIn(resumed["id"], xml)
        self.assertEqual({"paused": False}, kwargs)
        self.engine["synthesize_into"].assert_not_called()

        url = "http://overlays.example/ov.zip"
        building = []

        def synthesize(conn, *args, progress, **kwargs):
            progress(35)    # the engine's fetch: 35 % of the overlay in
            building.append(self.api.get_server(args[-1].split("<uuid>")[1][:36]))
            base.fake_restore(conn, *args, **kwargs)
        self.engine["synthesize_into"].side_effect = synthesize
        synthesized = self._boot(image_id=disk_image, metadata={"overlay_url": url})
        (_conn, _store, location, base_id, xml), kwargs = \
            self.engine["synthesize_into"].call_args
        self.assertEqual((url, base.BASE_ID), (location, base_id))
        self.assertIn(synthesized["id"], xml)
        # While it builds, the server's progress is the synthesis's.
        self.assertEqual([("BUILD", 35)], [(s["status"], s["progress"]) for s in building])
        self.engine["synthesize_into"].side_effect = base.fake_restore
        policy = kwargs["policy"]
        self.assertEqual(frozenset({80, 443}), policy.ports)   # the product default
        self.engine["overlay_base_id"].assert_called_with(self.engine_store(), url,
                                                          base.BASE_ID, policy)

        # Wrong base: ERROR with a fault that says why, nothing left on the hypervisor.
        self.engine["overlay_base_id"].return_value = "cd" * 32
        wrong = self._boot(image_id=disk_image, metadata={"overlay_url": url},
                           expected_state="ERROR")
        self.assertIn("needs base VM " + "cd" * 32, wrong["fault"]["message"])
        # A scheme the operator did not allow: nova-api refuses it, nothing is created.
        body = self._build_server(image_uuid=disk_image, networks="none")
        body["metadata"] = {"overlay_url": "file:///etc/passwd"}
        resp = self.api.api_post("/servers", {"server": body}, check_response_status=False)
        self.assertEqual(400, resp.status, resp.body)
        self.assertIn("scheme 'file' is not allowed", resp.body["badRequest"]["message"])
        # nova-compute checks the scheme too, with the same policy (the API's check skipped).
        with mock.patch.object(servers, "check_overlay_url"):
            refused = self._boot(image_id=disk_image,
                                 metadata={"overlay_url": "file:///etc/passwd"},
                                 expected_state="ERROR")
        self.assertIn("VM synthesis failed: overlay_url scheme 'file' is not allowed by this "
                      "cloud (allowed: http, https)", refused["fault"]["message"])
        # The engine failing while restoring.
        self.engine["overlay_base_id"].return_value = base.BASE_ID
        self.engine["synthesize_into"].side_effect = ConflictError("overlay is corrupt")
        broken = self._boot(image_id=disk_image, metadata={"overlay_url": url},
                            expected_state="ERROR")
        self.assertIn("VM synthesis failed: overlay is corrupt", broken["fault"]["message"])
        conn = self.compute.driver._host.get_connection()
        for server in (wrong, refused, broken):
            self.assertRaises(Exception, conn.lookupByUUIDString, server["id"])

    def engine_store(self):
        return self.compute.driver.bases.store

    def test_overlay_finish_reaches_the_endpoint(self):
        server = self._boot(image_id=self.base_images[cloudlet_glance.BASE_DISK])
        seen = {}

        def create_overlay(conn, store, domain_name, out_path):
            seen["task_state"] = self._instance(server["id"]).task_state
            seen["domain"] = domain_name
            with open(out_path, "wb") as f:
                f.write(b"PK overlay bytes")
            return {"base_vm_sha256": base.BASE_ID}

        self.engine["create_overlay"].side_effect = create_overlay
        body = self.api.post_server_action(
            server["id"], {"cloudlet-overlay-finish": {"overlay-name": "ov1"}})
        overlay_id = body["overlay-id"]
        self.assertEqual(task_states.IMAGE_PENDING_UPLOAD, seen["task_state"])
        self.assertEqual(self._instance(server["id"]).name, seen["domain"])
        self.assertEqual(b"PK overlay bytes", self.uploads[overlay_id])
        image = self.glance.show(None, overlay_id)
        self.assertEqual(base.BASE_ID, image["properties"]["base_sha256_uuid"])
        instance = self._instance(server["id"])
        self.assertIsNone(instance.task_state)
        self.assertEqual("active", instance.vm_state)
        self.assertEqual([], [n for n in os.listdir(self.engine_store().tmp_dir)
                              if n.startswith("overlay-")])

        # A failure in the engine: fault recorded, task_state reverted, record deleted.
        self.engine["create_overlay"].side_effect = ConflictError("domain has no base")
        resp = self.api.api_post("/servers/%s/action" % server["id"],
                                 {"cloudlet-overlay-finish": {"overlay-name": "ov2"}},
                                 check_response_status=False)
        self.assertEqual(500, resp.status)  # the cast ran as a call in this test
        self.assertIsNone(self._instance(server["id"]).task_state)
        self.assertIn("Cloudlet cloudlet-overlay-finish failed: domain has no base",
                      self._faults(server["id"]))
        # ... and its owner reads why in the server's metadata; the next action clears it.
        metadata = self.api.get_server(server["id"])["metadata"]
        self.assertEqual("Cloudlet cloudlet-overlay-finish failed: domain has no base",
                         metadata[cloudlet_glance.METADATA_TASK_ERROR])
        self.engine["create_overlay"].side_effect = create_overlay
        self.api.post_server_action(
            server["id"], {"cloudlet-overlay-finish": {"overlay-name": "ov3"}})
        self.assertNotIn(cloudlet_glance.METADATA_TASK_ERROR,
                         self.api.get_server(server["id"])["metadata"])
        self.assertEqual(["ov1", "ov3"], [i["name"] for i in self.glance.images.values()
                                   if i["properties"].get("cloudlet_type") ==
                                   cloudlet_glance.OVERLAY])

    def test_cloudlet_base_reaches_the_endpoint(self):
        server = self._boot()
        files = {}

        def create_base(conn, store, domain_name, name):
            path = os.path.join(self.cache_dir, "fakebase")
            os.makedirs(path, exist_ok=True)
            for member in ("disk.raw", "memory.img", "disk.digests", "memory.pages"):
                files[member] = os.path.join(path, member)
                with open(files[member], "wb") as f:
                    f.write(member.encode())
            by_type = {t: files[m] for t, m in imagemodel.BASE_FILES.items()}
            return SimpleNamespace(id="ef" * 32, path=path, disk_path=files["disk.raw"],
                                   memory_path=files["memory.img"],
                                   image_files=lambda: by_type, cmdline=None)

        self.engine["create_base"].side_effect = create_base
        body = self.api.post_server_action(server["id"], {"cloudlet-base": {"name": "b1"}})
        for key, member in (("base-disk", "disk.raw"), ("base-memory", "memory.img"),
                            ("base-disk-hash", "disk.digests"),
                            ("base-memory-hash", "memory.pages")):
            self.assertEqual(member.encode(), self.uploads[body[key]])
            self.assertEqual("ef" * 32,
                             self.glance.show(None, body[key])["properties"]["base_sha256_uuid"])
        self.assertIsNone(self._instance(server["id"]).task_state)
        # The host that made the base is where the scheduler sends its resumes.
        with open(os.path.join(self.cache_dir, "fakebase", basecache.RECORD)) as f:
            self.assertEqual([body["base-disk"]], json.load(f)["images"])
