"""Bases of direct-kernel-boot guests in nova, in-process (fakelibvirt, fake Glance).

The base disk image names its kernel and ramdisk images with nova's ``kernel_id`` and
``ramdisk_id`` (and ``os_command_line``): nova fetches them into the instance directory, the
restored domain boots nova's copies, and nova's own hard reboot and stop/start boot the disk
with them (no resume of the base again). ``cloudlet-base`` of such a guest uploads kernel and
ramdisk images and names them so. The real-parts version is tests/e2e/test_reboot.py.
"""

import os
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import fixtures

from cloudlet_compute import imagemodel as model
from cloudlet_compute.nova import engine_adapter
from tests.compute_nova import base

CMDLINE = "console=ttyS0 panic=-1"
BASE_XML = """<domain type='qemu'><name>base</name><memory>262144</memory>
<os><type arch='x86_64' machine='pc'>hvm</type><kernel>/gone/vmlinuz</kernel>
<initrd>/gone/initrd.img</initrd><cmdline>console=ttyS0 panic=-1</cmdline></os><devices>
<disk type='file' device='disk'><source file='/gone/disk.qcow2'/><target dev='vda'/></disk>
</devices></domain>"""


class BaseKernelTest(base.CloudletTestBase):

    def setUp(self):
        super().setUp()
        self.restored = []
        self.stock_boots = self._record_stock_boots()
        self.engine["resume_into"].side_effect = self._restore_through_the_hook
        self.boot_ids = {}
        for image_type, data in ((model.BASE_KERNEL, b"kernel bytes"),
                                 (model.BASE_RAMDISK, b"ramdisk bytes")):
            fmt = model.BOOT_FORMATS[image_type]
            self.boot_ids[image_type] = self.glance.create(None, {
                "name": "base" + model.SUFFIXES[image_type], "status": "active",
                "visibility": "public", "disk_format": fmt, "container_format": fmt,
                "properties": {model.PROPERTY_TYPE: image_type,
                               model.PROPERTY_BASE_ID: base.BASE_ID}},
                data=SimpleNamespace(read=lambda data=data: data))["id"]
        disk_id = self.base_images[model.BASE_DISK]
        self.glance.images[disk_id]["properties"].update(
            model.boot_properties(self.boot_ids, CMDLINE))

    def _restore_through_the_hook(self, conn, store, base_id, nova_xml, paused=False):
        """The engine's XML path for nova's domain: the base's XML through the placement."""
        store_copies = SimpleNamespace(id=base_id, boot_files=lambda: {
            "kernel": "/store/kernel", "initrd": "/store/initrd"})
        xml = engine_adapter.placement_for_nova(nova_xml).domain_xml(BASE_XML, store_copies)
        self.restored.append((nova_xml, xml))
        base.fake_restore(conn, nova_xml)

    def _record_stock_boots(self):
        """The XML of every boot nova's libvirt driver does itself (fakelibvirt forgets
        ``<os>``)."""
        host = self.compute.driver._host
        booted, write = [], host.write_instance_config

        def recording(xml):
            booted.append(xml)
            return write(xml)
        self.useFixture(fixtures.MockPatchObject(host, "write_instance_config",
                                                 side_effect=recording))
        return booted

    def _last_boot_os(self):
        root = ET.fromstring(self.stock_boots[-1])
        return root.findtext("os/kernel"), root.findtext("os/initrd"), root.findtext("os/cmdline")

    def test_restored_domain_and_novas_reboots_boot_the_images_kernel(self):
        server = self._boot(image_id=self.base_images[model.BASE_DISK])
        instance = self._instance(server["id"])
        self.assertEqual((self.boot_ids[model.BASE_KERNEL], self.boot_ids[model.BASE_RAMDISK]),
                         (instance.kernel_id, instance.ramdisk_id))
        [(nova_xml, restored)] = self.restored
        instance_dir = os.path.dirname(ET.fromstring(nova_xml).find(
            "devices/disk/source").get("file"))
        expected = (os.path.join(instance_dir, "kernel"), os.path.join(instance_dir, "ramdisk"),
                    CMDLINE)
        root = ET.fromstring(restored)
        self.assertEqual(expected, (root.findtext("os/kernel"), root.findtext("os/initrd"),
                                    root.findtext("os/cmdline")))

        # nova's own lifecycle boots the disk with the kernel: never a resume of the base.
        self.assertEqual([], self.stock_boots)
        self._reboot_server(server, hard=True)
        self.assertEqual(expected, self._last_boot_os())
        self._stop_server(server)
        self._start_server(server)
        self.assertEqual(2, len(self.stock_boots))
        self.assertEqual(expected, self._last_boot_os())
        self.assertEqual(1, self.engine["resume_into"].call_count)

    def test_cloudlet_base_uploads_kernel_and_ramdisk_images(self):
        server = self._boot()
        path = os.path.join(self.cache_dir, "fakebase")
        os.makedirs(path, exist_ok=True)
        files = {}
        for image_type, member in list(model.BASE_FILES.items()) + list(
                model.BOOT_FILES.items()):
            files[image_type] = os.path.join(path, member)
            with open(files[image_type], "wb") as f:
                f.write(member.encode())
        self.engine["create_base"].side_effect = lambda *a: SimpleNamespace(
            id="ef" * 32, path=path, cmdline=CMDLINE, image_files=lambda: files)

        body = self.api.post_server_action(server["id"], {"cloudlet-base": {"name": "b1"}})
        disk = self.glance.show(None, body["base-disk"])
        self.assertEqual(b"disk.raw", self.uploads[body["base-disk"]])
        props = disk["properties"]
        self.assertEqual(CMDLINE, props[model.PROPERTY_CMDLINE])
        for image_type, member in model.BOOT_FILES.items():
            image = self.glance.show(None, props[model.BOOT_LINKS[image_type]])
            fmt = model.BOOT_FORMATS[image_type]
            self.assertEqual((fmt, fmt, "b1" + model.SUFFIXES[image_type]),
                             (image["disk_format"], image["container_format"], image["name"]))
            self.assertEqual((image_type, "ef" * 32),
                             (image["properties"][model.PROPERTY_TYPE],
                              image["properties"][model.PROPERTY_BASE_ID]))
            self.assertEqual(member.encode(), self.glance._imagedata[image["id"]])
        self.assertIsNone(self._instance(server["id"]).task_state)

    def test_cloudlet_base_failure_removes_the_kernel_images(self):
        server = self._boot()
        self.engine["create_base"].side_effect = lambda *a: SimpleNamespace(
            id="ef" * 32, cmdline=CMDLINE, image_files=lambda: {
                model.BASE_KERNEL: __file__, model.BASE_MEMORY: __file__,
                model.BASE_DISK_HASH: __file__, model.BASE_MEMORY_HASH: __file__,
                model.BASE_DISK: "/nonexistent/disk.raw"})
        before = set(self.glance.images)
        resp = self.api.api_post("/servers/%s/action" % server["id"],
                                 {"cloudlet-base": {"name": "b2"}},
                                 check_response_status=False)
        self.assertEqual(500, resp.status)   # the cast ran as a call in this test
        left = [self.glance.images[i]["name"] for i in set(self.glance.images) - before]
        self.assertNotIn("b2-kernel", left)
