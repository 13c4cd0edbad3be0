"""Shared pieces of the Cloudlet panel's unit tests: fake images, instances and flavors as
the API module returns them, Glance images as Horizon's ``api.glance`` returns them, the
panel's URLs, and ``PanelTestCase`` (Horizon's clients unreachable, messages readable).
"""

import io
import types
import zipfile
from unittest import mock

from django.contrib.messages.storage import default_storage
from django.urls import reverse
from openstack_dashboard.api import _nova as horizon_nova
from openstack_dashboard.api import glance, neutron
from openstack_dashboard.test import helpers as test

from dashboard_panel.api import cloudlet as api

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


class _Record(dict):
    """A glanceclient image record: a dict whose keys are attributes as well."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def glance_image(image_id, kind=None, status="active", **properties):
    """An image as ``openstack_dashboard.api.glance`` returns it, of ``cloudlet_type``
    ``kind`` (if given) and base ``BASE_ID`` (unless ``properties`` says otherwise)."""
    record = _Record(id=image_id, name=image_id, status=status, visibility="private",
                     min_ram=256, min_disk=1, size=1, created_at=None)
    if kind:
        record.update({"cloudlet_type": kind, "base_sha256_uuid": BASE_ID})
    record.update(properties)
    return glance.Image(record)


def zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("basevm-package.json", "{}")
    return buf.getvalue()


class PanelTestCase(test.TestCase):

    # The clients behind openstack_dashboard.api that the panel's calls reach.
    CLIENTS = ((glance, "glanceclient"), (horizon_nova, "novaclient"),
               (horizon_nova, "computeclient"), (neutron, "networkclient"))

    def setUp(self):
        super().setUp()
        for module, name in self.CLIENTS:
            patcher = mock.patch.object(
                module, name, side_effect=AssertionError("a unit test reached OpenStack"))
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

