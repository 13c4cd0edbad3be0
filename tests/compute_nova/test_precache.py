"""Pre-caching base VMs through nova's own API (``POST /os-aggregates/{id}/images``,
microversion 2.81: conductor -> compute manager -> ``CloudletDriver.cache_image``) and
listing what each host caches (``GET /os-cloudlet-bases``), in-process with two computes.

The base cache is real (the engine's store, a synthetic base in nova's fake Glance); nova's
own image cache (``LibvirtDriver.cache_image``) is recorded, not run. The clients' core
(``client.core.bases``) reaches this nova through openstacksdk, as the command lines do.
"""

import hashlib
import os
import types
import uuid
from unittest import mock

import openstack.connection
from keystoneauth1 import noauth
from keystoneauth1 import session as ks_session
from nova import context as nova_context
from nova import objects
from nova.tests import fixtures as nova_fixtures

from bench import synthetic
from client.core import bases as core_bases
from client.core.errors import ApiError
from cloudlet_api import cached_bases
from cloudlet_compute.errors import NotFoundError
from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova import glance as cloudlet_glance
from cloudlet_compute.nova.exception import CloudletBaseUnavailable
from tests.compute_nova import base


def sdk_conn(base_url, user, roles, glance):
    """An openstacksdk connection to the in-process nova as ``user`` with ``roles`` (nova's
    test API authenticates by headers); its images are nova's fake Glance's."""
    sess = ks_session.Session(auth=noauth.NoAuth(), additional_headers={
        "X-Auth-User": user, "X-User-Id": user, "X-Auth-Project-Id": nova_fixtures.PROJECT_ID,
        "X-Roles": ",".join(roles)})
    conn = openstack.connection.Connection(session=sess, compute_endpoint_override=base_url)

    def images(**query):   # what openstacksdk's image proxy gives: records with attributes
        return [types.SimpleNamespace(properties=i.get("properties") or {},
                                      **{k: i.get(k) for k in ("id", "name", "status")})
                for i in glance.images.values()]

    return types.SimpleNamespace(compute=conn.compute,
                                 image=types.SimpleNamespace(images=images))


REAL_ENGINE = {name: getattr(engine_adapter, name) for name in ("cached_base", "cache_base")}
NOVA_CACHE_IMAGE = "nova.virt.libvirt.driver.LibvirtDriver.cache_image"


class PrecacheTest(base.CloudletTestBase):

    def setUp(self):
        super().setUp()
        self.flags(cache_dir=self.cache_dir + "-2", group="cloudlet")
        self.start_compute("compute2")
        for name, real in REAL_ENGINE.items():
            self.engine[name].side_effect = real
        self.base_id, self.disk_id, self.memory_id = self._publish_base(11)
        self.downloads = []
        download = self.glance.download

        def counting_download(context, image_id, *args, **kwargs):
            self.downloads.append(image_id)
            return download(context, image_id, *args, **kwargs)

        self.glance.download = counting_download

    def _publish_base(self, seed):
        """A synthetic base VM as a base disk image and its memory image in Glance."""
        pages, disk, _, _ = synthetic.world(seed)
        base_id = hashlib.sha256(disk).hexdigest()
        memory_id, disk_id = str(uuid.uuid4()), str(uuid.uuid4())
        for image_id, image_type, data, links in (
                (memory_id, cloudlet_glance.BASE_MEMORY, synthetic.memory_image(pages), {}),
                (disk_id, cloudlet_glance.BASE_DISK, disk,
                 {cloudlet_glance.BASE_MEMORY: memory_id})):
            self.glance.create(None, {
                "id": image_id, "name": "syn" + cloudlet_glance.SUFFIXES[image_type],
                "status": "active", "visibility": "public", "disk_format": "raw",
                "container_format": "bare", "size": len(data), "properties": dict(
                    links, **{cloudlet_glance.PROPERTY_CLOUDLET: "True",
                              cloudlet_glance.PROPERTY_TYPE: image_type,
                              cloudlet_glance.PROPERTY_BASE_ID: base_id})})
            self.glance._imagedata[image_id] = data
        return base_id, disk_id, memory_id

    def _aggregate(self, *hosts):
        agg = self.admin_api.post_aggregate({"aggregate": {"name": "cloudlets"}})
        for host in hosts:
            self.admin_api.add_host_to_aggregate(agg["id"], host)
        return agg["id"]

    def _cache(self, agg_id, *image_ids, api=None):
        return (api or self.admin_api).api_post(
            "/os-aggregates/%s/images" % agg_id, {"cache": [{"id": i} for i in image_ids]},
            check_response_status=False)

    def _listing(self, api=None):
        ctx = nova_context.get_admin_context()
        for compute in self.computes.values():
            compute.manager.update_available_resource(ctx)
        resp = (api or self.admin_api).api_get(cached_bases.PATH,
                                               check_response_status=False)
        return resp.status, resp.body

    def _cached(self, host):
        return sorted(os.listdir(os.path.join(
            self.computes[host].driver.bases.store.bases_dir)))

    def test_precache_through_the_aggregate_api_list_the_hosts_and_refuse_a_broken_base(self):
        agg_id = self._aggregate("compute2")
        admin, member = (sdk_conn(self.api_fixture.base_url, user, roles, self.glance)
                         for user, roles in (("admin", ["reader", "member", "admin"]),
                                             ("fake", ["reader", "member"])))
        # The clients' request (openstacksdk, nova's 2.81 aggregate image cache).
        with mock.patch(NOVA_CACHE_IMAGE, return_value=True) as nova_cache:
            answer = core_bases.cache_base(admin, self.base_id, "cloudlets", "hosts")
        self.assertEqual((self.base_id, self.disk_id, "compute2"),
                         (answer["base_id"], answer["image"], answer["hosts"]))
        # The whole base on compute2 only (disk and memory fetched once), and the disk image
        # in nova's own cache; compute1, not in the aggregate, got nothing.
        self.assertEqual([self.base_id], self._cached("compute2"))
        self.assertEqual([], self._cached("compute1"))
        self.assertEqual(sorted([self.disk_id, self.memory_id]), sorted(self.downloads))
        self.assertEqual([self.disk_id], [c.args[1] for c in nova_cache.call_args_list])

        # A plain image is nova's alone; the cached base is not fetched again.
        plain = self.glance.image1["id"]
        with mock.patch(NOVA_CACHE_IMAGE, return_value=False) as nova_cache:
            resp = self._cache(agg_id, plain)
            self.assertEqual(202, resp.status, resp.body)
            self.assertEqual([plain], [c.args[1] for c in nova_cache.call_args_list])
            driver = self.computes["compute2"].driver
            self.assertFalse(driver.cache_image(self.admin_context(), self.disk_id))
        self.assertEqual(2, len(self.downloads))

        status, body = self._listing()
        self.assertEqual(200, status, body)
        self.assertEqual([
            {"host": "compute1", "node": "compute1", "bases": [], "base_images": []},
            {"host": "compute2", "node": "compute2", "bases": [self.base_id],
             "base_images": [self.disk_id]}], body["hosts"])
        self.assertEqual([{"host": "compute1", "base_id": None, "name": None},
                          {"host": "compute2", "base_id": self.base_id, "name": "syn-disk"}],
                         core_bases.cached_bases(admin))

        # Not an admin: nova's 403 for the pre-cache, ours for the listing; one line each.
        resp = self._cache(agg_id, self.disk_id, api=self.api)
        self.assertEqual(403, resp.status, resp.body)
        status, body = self._listing(api=self.api)
        self.assertEqual(403, status, body)
        with self.assertRaisesRegex(ApiError, r"^Policy doesn't allow "
                                    r"os_compute_api:os-aggregates:\w+ to be performed"):
            core_bases.cache_base(member, self.base_id, "cloudlets", "hosts")
        with self.assertRaisesRegex(ApiError, r"^Policy doesn't allow os_compute_api:"
                                    r"os-cloudlet:hosts to be performed. \(HTTP 403\)$"):
            core_bases.cached_bases(member)
        with self.assertRaisesRegex(NotFoundError, "^no aggregate 'far'$"):
            core_bases.cache_base(admin, self.base_id, "far", "hosts")

        # (One nova for these checks: each boot takes seconds.)
        self._a_base_whose_memory_image_is_gone_is_refused_with_the_reason()

    def _a_base_whose_memory_image_is_gone_is_refused_with_the_reason(self):
        driver = self.computes["compute1"].driver
        self.glance.delete(None, self.memory_id)
        with mock.patch(NOVA_CACHE_IMAGE, return_value=True) as nova_cache:
            with self.assertRaisesRegex(CloudletBaseUnavailable,
                                        "base VM %s is not usable on this host: image %s "
                                        "is gone" % (self.base_id, self.memory_id)):
                driver.cache_image(self.admin_context(), self.disk_id)
        nova_cache.assert_not_called()
        self.assertEqual([], self._cached("compute1"))
        self.assertEqual([], os.listdir(driver.bases.store.tmp_dir))

    @staticmethod
    def admin_context():
        return nova_context.get_admin_context()


def test_a_compute_node_without_cloudlet_stats_lists_no_bases():
    for node in (objects.ComputeNode(host="h1", hypervisor_hostname="n1", stats={}),
                 objects.ComputeNode(host="h2", hypervisor_hostname="n2")):
        assert cached_bases.host_entry(node) == {
            "host": node.host, "node": node.hypervisor_hostname, "bases": [],
            "base_images": []}
