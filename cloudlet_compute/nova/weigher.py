"""CachedBaseWeigher: nova-scheduler prefers compute hosts that already hold the request's
base VM, so a resume or synthesis does not first fetch the base from Glance.

Enabled in nova-scheduler's configuration::

    [filter_scheduler]
    weight_classes = nova.scheduler.weights.all_weighers,
                     cloudlet_compute.nova.weigher.CachedBaseWeigher

Each CloudletDriver host reports its cached bases in its compute node ``stats``
(``cloudlet_compute.nova.basecache``). The request names its base by the image it boots
(a base disk image that a host fetched or created the base through) or by the scheduler
hint ``cloudlet_base`` (a base id: ``--hint cloudlet_base=<id>``; nova keeps custom image
properties out of the request spec, so the id is not there). A host that holds it weighs
1, any other 0: the filters still decide where the server fits, and without a cached
host any host does.
"""

import nova.conf
from nova.scheduler import utils
from nova.scheduler import weights

from cloudlet_compute.nova import basecache
from cloudlet_compute.nova import conf as cloudlet_conf

CONF = nova.conf.CONF
cloudlet_conf.register_opts(CONF)
HINT = 'cloudlet_base'


def _listed(host_state, key, value):
    return bool(value) and value in (host_state.stats or {}).get(key, '').split(',')


def _image_id(spec):
    image = spec.image if spec.obj_attr_is_set('image') else None
    return image.id if image is not None and image.obj_attr_is_set('id') else None


class CachedBaseWeigher(weights.BaseHostWeigher):
    """1 for a host that caches the request's base VM, else 0."""

    def weight_multiplier(self, host_state):
        return utils.get_weight_multiplier(
            host_state, 'cloudlet_base_weight_multiplier',
            CONF.cloudlet.base_cache_weight_multiplier)

    def _weigh_object(self, host_state, weight_properties):
        spec = weight_properties
        if _listed(host_state, basecache.STAT_BASES, spec.get_scheduler_hint(HINT)) or \
                _listed(host_state, basecache.STAT_IMAGES, _image_id(spec)):
            return 1.0
        return 0.0
