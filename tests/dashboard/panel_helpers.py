"""Shared pieces of the Cloudlet panel's unit tests: images as Horizon's ``api.glance``
returns them, servers as novaclient returns them, flavors, the panel's URLs, and
``PanelTestCase``: Horizon's clients unreachable unless a test gives ``horizon(...)`` the
cloud it should see (mocks at the ``openstack_dashboard.api`` boundary, as Horizon's own
tests mock it), messages readable.
"""

import itertools
import pathlib
import shutil
import tempfile
import types
from unittest import mock

from django.contrib.messages.storage import default_storage
from django.urls import reverse
from glanceclient import exc as glance_exceptions
from novaclient import exceptions as nova_exceptions
from openstack_dashboard.api import _nova as horizon_nova
from openstack_dashboard.api import glance, neutron, nova
from openstack_dashboard.test import helpers as test

from tests.client.test_base_images import export_package

INDEX_URL = reverse("horizon:project:cloudlet:index")
IMPORT_URL = reverse("horizon:project:cloudlet:import")
RESUME_URL = reverse("horizon:project:cloudlet:resume")
SYNTHESIS_URL = reverse("horizon:project:cloudlet:synthesis")
BASE_ID = "b" * 64
BASE_DISK, OVERLAY = "cloudlet_base_disk", "cloudlet_overlay"
RESUMED, SYNTHESIZED = "resumed", "synthesized"


class ImageRecord(dict):
    """A glanceclient image record: a dict whose keys are attributes as well."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def glance_image(image_id, kind=None, status="active", **properties):
    """An image as ``openstack_dashboard.api.glance`` returns it, of ``cloudlet_type``
    ``kind`` (if given) and base ``BASE_ID`` (unless ``properties`` says otherwise)."""
    record = ImageRecord(id=image_id, name=image_id, status=status, visibility="private",
                     min_ram=256, min_disk=1, size=1, created_at=None)
    if kind:
        record.update({"cloudlet_type": kind, "base_sha256_uuid": BASE_ID})
    record.update(properties)
    return glance.Image(record)


def base(image_id="img-1", name="tiny-disk", status="active", min_ram=256, min_disk=1):
    return glance_image(image_id, BASE_DISK, status, name=name, min_ram=min_ram,
                        min_disk=min_disk, size=64 << 20, image_type="snapshot")


def overlay(image_id="ov-1", name="vm1-overlay", status="active", size=5 << 20):
    return glance_image(image_id, OVERLAY, status, name=name, size=size,
                        instance_uuid="srv-1")


def server(server_id="srv-1", name="vm1", kind=RESUMED, status="ACTIVE", task_state=None,
           image_id="img-1", **attrs):
    """A server as novaclient returns it (extended attributes under their API names)."""
    fields = {"id": server_id, "name": name, "status": status,
              "OS-EXT-STS:task_state": task_state, "OS-EXT-STS:power_state": 1,
              "progress": 0, "image": {"id": image_id},
              "flavor": {"original_name": "cl.tiny"}, "created": None,
              "metadata": {"overlay_url": "http://h/o.zip"} if kind == SYNTHESIZED else {},
              "addresses": {"provider": [{"addr": "10.0.0.5"}]}}
    fields.update(attrs)
    return types.SimpleNamespace(**fields)


def flavor(flavor_id, name, ram, disk, vcpus=1):
    return types.SimpleNamespace(id=flavor_id, name=name, ram=ram, disk=disk, vcpus=vcpus)


FLAVORS = [flavor("fl-0", "too.small", 128, 1), flavor("fl-1", "cl.tiny", 256, 1),
           flavor("fl-2", "cl.small", 512, 2)]


def action_answer(body):
    """What novaclient's HTTP client answers a POST with: ``(response, JSON body)``."""
    return mock.Mock(status_code=202), body


class PanelTestCase(test.TestCase):

    # The clients behind openstack_dashboard.api that the panel's calls reach.
    CLIENTS = ((glance, "glanceclient"), (horizon_nova, "novaclient"),
               (horizon_nova, "computeclient"), (neutron, "networkclient"))

    def setUp(self):
        super().setUp()
        for module, name in self.CLIENTS:
            self._patch(module, name,
                        side_effect=AssertionError("a unit test reached OpenStack"))

    def _patch(self, target, name, **kwargs):
        patcher = mock.patch.object(target, name, **kwargs)
        self.addCleanup(patcher.stop)
        return patcher.start()

    def horizon(self, images=(), servers=(), flavors=FLAVORS, networks=()):
        """Make ``openstack_dashboard.api`` answer for this cloud: Glance holds ``images``
        (filtered as Glance filters; ``self.image_queries``), Nova ``servers`` (``self.nova``: the novaclient),
        ``flavors`` and ``networks`` (``[(id, name)]``). The mocks record every call."""
        self.images = {i.id: i for i in images}
        self.image_queries = []   # the filters of every image list, as given
        for image in images:
            image._apiresource.setdefault("owner", self.tenant.id)   # the user's project
        self.mock_image_list_detailed = self._patch(glance, "image_list_detailed",
                                                    side_effect=self._image_list)
        self.mock_image_get = self._patch(glance, "image_get", side_effect=self._image_get)
        self.mock_image_delete = self._patch(glance, "image_delete")
        self.glance = self._patch(glance, "glanceclient").return_value
        self.nova = mock.Mock()
        self.nova.servers.list.return_value = list(servers)
        self.nova.servers.get.side_effect = self._server_get(servers)
        self.mock_novaclient = self._patch(horizon_nova, "novaclient", return_value=self.nova)
        self.mock_flavor_list = self._patch(nova, "flavor_list", return_value=list(flavors))
        self.mock_server_delete = self._patch(nova, "server_delete")
        self.mock_network_list = self._patch(
            neutron, "network_list_for_tenant",
            return_value=[types.SimpleNamespace(id=i, name=n) for i, n in networks])

    def glance_store(self, fail_upload_of=None):
        """After ``horizon()``: Glance keeps what is created in ``self.images``; an image
        becomes active once its data is uploaded (the upload of an image named
        ``fail_upload_of`` fails); a deleted one leaves."""
        ids = itertools.count(1)

        def create(**fields):
            record = ImageRecord(fields, id="i%d" % next(ids), status="queued", size=0,
                             created_at=None)
            self.images[record.id] = glance.Image(record)
            return record

        def upload(image_id, data):
            record = self.images[image_id]._apiresource
            if record["name"] == fail_upload_of:
                raise glance_exceptions.HTTPOverLimit("storage quota full")
            record.update(status="active", size=len(data.read()))

        self.glance.images.create.side_effect = create
        self.glance.images.upload.side_effect = upload
        self.mock_image_delete.side_effect = lambda request, image_id: self.images.pop(image_id)

    def base_package(self):
        """``(path, base id)`` of a small base package (removed after the test)."""
        scratch = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, scratch)
        return export_package(scratch, boot=False)

    def _image_list(self, request, filters=None, **kwargs):
        filters = {} if filters is None else filters
        self.image_queries.append(dict(filters))
        found = [i for i in self.images.values()
                 if all(i._apiresource.get(k) == v for k, v in filters.items())]
        # As glanceclient does: the filters given are rewritten (encoded, with a limit).
        filters.update({k: v.encode() for k, v in filters.items() if isinstance(v, str)},
                       limit=1000)
        return found, False, False

    def _image_get(self, request, image_id):
        if image_id not in self.images:
            raise glance_exceptions.HTTPNotFound("No image found with ID %s" % image_id)
        return self.images[image_id]

    @staticmethod
    def _server_get(servers):
        by_id = {s.id: s for s in servers}

        def get(server_id):
            if server_id not in by_id:
                raise nova_exceptions.NotFound(404, "No server with a name or ID of '%s' "
                                                    "exists." % server_id)
            return by_id[server_id]
        return get

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
