"""Client side of the ``cloudlet`` RPC namespace that CloudletDriver adds to nova-compute.

The endpoint lives in ``cloudlet_compute.nova.rpc``; it listens on nova's ``compute``
topic (the host's queue) in its own namespace, so it never collides with nova's methods.

API version history:

* 1.0 - ``cloudlet_base``, ``cloudlet_overlay_finish``
* 1.1 - ``cloudlet_handoff``
"""

import oslo_messaging as messaging
from oslo_log import log as logging

from nova.compute import rpcapi as compute_rpcapi
from nova import exception
from nova.objects import base as objects_base
from nova import rpc

LOG = logging.getLogger(__name__)

NAMESPACE = 'cloudlet'
VERSION = '1.1'


class CloudletComputeAPI:
    """Casts to the cloudlet endpoint of the compute host that runs an instance."""

    def __init__(self):
        target = messaging.Target(topic=compute_rpcapi.RPC_TOPIC, namespace=NAMESPACE,
                                  version=VERSION)
        client = rpc.get_client(target, version_cap=VERSION,
                                serializer=objects_base.NovaObjectSerializer())
        # Honors a cell-targeted context (its own message queue), as nova's ComputeAPI does.
        self.router = rpc.ClientRouter(client)

    def _prepare(self, ctxt, instance):
        if not instance.host:
            raise exception.InstanceNotReady(instance_id=instance.uuid)
        return self.router.client(ctxt).prepare(server=instance.host, version=VERSION)

    def cloudlet_base(self, ctxt, instance, image_ids):
        """Snapshot ``instance`` into the base VM records ``image_ids`` ({type: id})."""
        self._prepare(ctxt, instance).cast(ctxt, 'cloudlet_base', instance=instance,
                                           image_ids=image_ids)

    def cloudlet_overlay_finish(self, ctxt, instance, overlay_name, overlay_id):
        """Build ``instance``'s VM overlay and upload it to image ``overlay_id``."""
        self._prepare(ctxt, instance).cast(ctxt, 'cloudlet_overlay_finish',
                                           instance=instance, overlay_name=overlay_name,
                                           overlay_id=overlay_id)

    def cloudlet_handoff(self, ctxt, instance, handoff_url, dest_token, dest_vmname,
                         dest_image_id, dest_flavor_id):
        """Hand ``instance`` off to the cloud whose compute endpoint is ``handoff_url``."""
        self._prepare(ctxt, instance).cast(ctxt, 'cloudlet_handoff', instance=instance,
                                           handoff_url=handoff_url, dest_token=dest_token,
                                           dest_vmname=dest_vmname,
                                           dest_image_id=dest_image_id,
                                           dest_flavor_id=dest_flavor_id)
