"""Pre-caching a base VM on the hosts of an aggregate, and listing what each host caches,
with ``openstack cloudlet base cache|hosts`` on the embedded OpenStack.

The base is evicted from the compute host's cache first; nova's aggregate image cache
(``POST /os-aggregates/{id}/images``) reaches ``CloudletDriver.cache_image``, which brings
the whole base VM (disk, memory image, indexes) back; a second request finds it cached. The
listing is admin-only: the demo user gets a one-line 403.
"""

import os
import uuid

from cloudlet_compute import imagemodel as model
from tests.client.conftest import as_json, openstack
from tests.support import cloud, faults

ADMIN = "cloudlet-admin"
RESOURCE_UPDATE = 60
PRECACHED = "pre-cache of base VM %s (image %s): %s"


def test_precache_and_listing(clouds, base_images):
    demo, admin = clouds
    disk_id = base_images[model.BASE_DISK]
    base_id = demo.image.get_image(disk_id).properties[model.PROPERTY_BASE_ID]
    host = next(admin.compute.services(binary="nova-compute")).host
    aggregate = admin.compute.create_aggregate(name="precache-%s" % uuid.uuid4().hex[:6])
    try:
        admin.compute.add_host_to_aggregate(aggregate, host)

        faults.evict_base(base_id)
        base_dir = os.path.join(faults.cache_dir(), "bases", base_id)
        assert not os.path.exists(base_dir)
        for outcome in ("fetched from Glance", "already cached"):
            log = faults.ServiceLog("nova-compute")
            openstack("cloudlet", "base", "cache", base_id, "--aggregate", aggregate.name,
                      os_cloud=ADMIN)
            cloud.wait_for(lambda: log.says(PRECACHED % (base_id, disk_id, outcome)), 120,
                           "nova-compute to pre-cache base %s (%s)" % (base_id, outcome))
        files = set(os.listdir(base_dir))
        assert {"disk.raw", "memory.img"} <= files, files

        def listed():
            rows = as_json(openstack("cloudlet", "base", "hosts", "-f", "json",
                                     os_cloud=ADMIN))
            return [r for r in rows if r["Host"] == host and r["Base Id"] == base_id]
        # The host reports its cache with its resources, once a minute (nova's periodic
        # update_available_resource): in a full run, earlier tests cached the base long ago.
        assert cloud.wait_for(listed, RESOURCE_UPDATE + 30,
                              "host %s to list base %s" % (host, base_id))

        refused = openstack("cloudlet", "base", "hosts", check=False)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode != 0 and len(lines) == 1 and "403" in lines[0], \
            refused.stderr
    finally:
        admin.compute.remove_host_from_aggregate(aggregate, host)
        admin.compute.delete_aggregate(aggregate)
