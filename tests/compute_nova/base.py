"""In-process nova with the cloudlet API router and CloudletDriver on fakelibvirt.

nova's own functional framework: API (through our paste app), conductor, scheduler,
placement, fake Glance/Neutron/Cinder, and computes whose libvirt is fakelibvirt. The
engine is never reached: tests replace ``engine_adapter`` functions.
"""

import os
import sys
import types
import uuid

import fixtures

import nova.conf
from nova import context as nova_context
from nova import objects
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.libvirt import base

from cloudlet_compute.nova import conf as cloudlet_conf
from cloudlet_compute.nova import glance as cloudlet_glance
from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova import shim

STOCK_APP = "paste.app_factory = nova.api.openstack.compute:APIRouterV21.factory"
OUR_APP = "paste.app_factory = cloudlet_api.router:APIRouter.factory"
BASE_ID = "ab" * 32


def _stock_paste():
    path = os.path.join(sys.prefix, "etc", "nova", "api-paste.ini")
    if not os.path.exists(path):
        raise RuntimeError("nova's api-paste.ini is not at %s" % path)
    with open(path) as f:
        return f.read()


def write_paste_config(directory):
    """nova's api-paste.ini with our router as ``osapi_compute_app_v21``."""
    text = _stock_paste()
    if STOCK_APP not in text:
        raise RuntimeError("nova's api-paste.ini has no stock osapi_compute_app_v21 line")
    path = os.path.join(directory, "api-paste.ini")
    with open(path, "w") as f:
        f.write(text.replace(STOCK_APP, OUR_APP))
    return os.path.abspath(path)


class CloudletTestBase(base.ServersTestBase):
    """ServersTestBase with os-cloudlet enabled and CloudletDriver as compute_driver."""

    microversion = "latest"
    # ``[cloudlet]`` options set before the services start (they read them at start).
    cloudlet_flags = {}

    def setUp(self):
        tmp = self.useFixture(fixtures.TempDir()).path
        self.flags(api_paste_config=write_paste_config(tmp), group="wsgi")
        if self.cloudlet_flags:
            cloudlet_conf.register_opts(nova.conf.CONF)
            self.flags(group="cloudlet", **self.cloudlet_flags)
        self.cache_dir = os.path.join(tmp, "cloudlet")
        shim.alias()
        super().setUp()
        self.flags(cache_dir=self.cache_dir, group="cloudlet")
        self.start_compute("compute1")
        self.compute = self.computes["compute1"]
        self.base_images = self._create_base_images()
        self.engine = self._fake_engine()
        self.uploads = self._record_uploads()

    def _record_uploads(self):
        """nova's fake Glance drops the data of ``update``; keep it for assertions."""
        uploads, update = {}, self.glance.update

        def recording_update(context, image_id, metadata, data=None, purge_props=False):
            if data is not None:
                uploads[image_id] = self.glance._imagedata[image_id] = data.read()
            return update(context, image_id, metadata, data=None, purge_props=purge_props)

        self.glance.update = recording_update
        return uploads

    def _fake_engine(self):
        """Replace the engine behind ``engine_adapter``: the base is "cached", restores
        start nova's XML in fakelibvirt, overlays need ``BASE_ID``."""
        mocks = {}
        for name, kwargs in (
                ("cached_base", {"return_value": types.SimpleNamespace(
                    id=BASE_ID, path=self.useFixture(fixtures.TempDir()).path)}),
                ("cache_base", {"side_effect": AssertionError("base already cached")}),
                ("overlay_base_id", {"return_value": BASE_ID}),
                ("overlay_size_bound", {"return_value": 1 << 30}),
                ("resume_into", {"side_effect": fake_restore}),
                ("synthesize_into", {"side_effect": fake_restore}),
                ("create_base", {"side_effect": AssertionError("no engine here")}),
                ("create_overlay", {"side_effect": AssertionError("no engine here")})):
            mocks[name] = self.useFixture(fixtures.MockPatchObject(
                engine_adapter, name, **kwargs)).mock
        return mocks

    def _clear_attrs(self):
        # NOTE: nova deletes public attributes after each test to save memory; pytest 9
        # still reads some of them while reporting, so keep everything.
        pass

    def _setup_compute_service(self):
        self.flags(compute_driver=shim.DRIVER)

    def _create_base_images(self):
        """Four linked base VM images in the fake Glance, like cloudlet-base makes."""
        ids = {t: str(uuid.uuid4()) for t in (cloudlet_glance.BASE_DISK,) +
               cloudlet_glance.LINKED_TYPES}
        for image_type, image_id in ids.items():
            props = {cloudlet_glance.PROPERTY_CLOUDLET: "True",
                     cloudlet_glance.PROPERTY_TYPE: image_type,
                     cloudlet_glance.PROPERTY_BASE_ID: BASE_ID}
            if image_type == cloudlet_glance.BASE_DISK:
                props.update({t: ids[t] for t in cloudlet_glance.LINKED_TYPES})
            self.glance.create(None, {
                "id": image_id, "name": "base" + cloudlet_glance.SUFFIXES[image_type],
                "status": "active", "visibility": "public", "disk_format": "raw",
                "container_format": "bare", "size": 1 << 20, "min_disk": 0,
                "min_ram": 0, "properties": props})
        return ids

    def _instance(self, server_id):
        return objects.Instance.get_by_uuid(nova_context.get_admin_context(), server_id)

    def _faults(self, server_id):
        return [f.message for f in objects.InstanceFaultList.get_by_instance_uuids(
            nova_context.get_admin_context(), [server_id])]

    def _boot(self, image_id=None, metadata=None, expected_state="ACTIVE", api=None):
        api = api or self.api
        body = self._build_server(image_uuid=image_id or self.glance.image1["id"],
                                  networks="none")
        if metadata:
            body["metadata"] = metadata
        server = api.post_server({"server": body})
        return self._wait_for_state_change(server, expected_state, max_retries=40)


def fake_restore(conn, *args, **kwargs):
    """Stands in for the engine's restore: start nova's XML as a fakelibvirt domain."""
    xml = [a for a in args if isinstance(a, str) and a.lstrip().startswith("<domain")][0]
    conn.defineXML(xml).create()


__all__ = ["CloudletTestBase", "BASE_ID", "fake_restore", "fakelibvirt"]
