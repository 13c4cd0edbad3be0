"""Two CloudletDriver computes under nova's real scheduler with CachedBaseWeigher: the
compute node stats name the bases a host caches, and resumes of such a base land there."""

import os

from nova import context as nova_context
from nova import objects

from bench import synthetic
from cloudlet_compute.nova import basecache
from cloudlet_compute.nova import glance as cloudlet_glance
from tests.compute_nova import base

WEIGHERS = ["nova.scheduler.weights.all_weighers",
            "cloudlet_compute.nova.weigher.CachedBaseWeigher"]


class CachedBaseSchedulingTest(base.CloudletTestBase):

    def setUp(self):
        self.flags(weight_classes=WEIGHERS, group="filter_scheduler")
        super().setUp()
        self.flags(cache_dir=self.cache_dir + "-2", group="cloudlet")
        self.start_compute("compute2")

    def _refresh_stats(self):
        ctx = nova_context.get_admin_context()
        for compute in self.computes.values():
            compute.manager.update_available_resource(ctx)

    def _host_of(self, server):
        return server["OS-EXT-SRV-ATTR:host"]

    def test_resumes_land_on_the_host_that_caches_the_base(self):
        disk_image = self.base_images[cloudlet_glance.BASE_DISK]
        cache = self.computes["compute2"].driver.bases
        work = cache.store.scratch("test-")
        held = synthetic.make_base(cache.store, work)
        os.rmdir(work)
        cache.record_use(held, disk_image)     # as its first resume there would
        self._refresh_stats()
        stats = objects.ComputeNode.get_by_host_and_nodename(
            nova_context.get_admin_context(), "compute2", "compute2").stats
        self.assertEqual((held.id, disk_image), (stats[basecache.STAT_BASES],
                                                 stats[basecache.STAT_IMAGES]))

        # nova's RAM weigher alone would put the second one on the emptier compute1.
        hosts = [self._host_of(self._boot(image_id=disk_image)) for _ in range(2)]
        self.assertEqual(["compute2"] * 2, hosts)
        # An image no host caches: any host, here the emptier one.
        self.assertEqual("compute1", self._host_of(self._boot()))
