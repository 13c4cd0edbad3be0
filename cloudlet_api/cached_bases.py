"""``GET /os-cloudlet-bases`` (admin): the base VMs each compute host caches.

Read from the compute nodes' ``stats`` in nova's database (``cloudlet_bases`` and
``cloudlet_base_images``, which ``CloudletDriver`` reports with its resources; see
``cloudlet_compute.nova.basecache``), so no compute host is asked and a host shows a change
of its cache at its next resource update (``[DEFAULT] update_resources_interval``). A host
whose driver reports no cache (another driver, or a cache it could not read) lists none.
"""

from nova.api.openstack import wsgi
from nova.api import validation
from nova.compute import api as compute

from cloudlet_api.policies import cloudlet as policies
from cloudlet_api.schemas import cloudlet as schema
from cloudlet_compute.nova import basecache

PATH = '/os-cloudlet-bases'


def _ids(stats, key):
    return [i for i in (stats or {}).get(key, '').split(',') if i]


def host_entry(node):
    """What compute node ``node`` (a ``ComputeNode``) reports holding."""
    stats = node.stats if node.obj_attr_is_set('stats') else {}
    return {'host': node.host, 'node': node.hypervisor_hostname,
            'bases': _ids(stats, basecache.STAT_BASES),
            'base_images': _ids(stats, basecache.STAT_IMAGES)}


@validation.validated
class CachedBasesController(wsgi.Controller):
    """The base VMs each compute host caches, most recently used first."""

    def __init__(self):
        super().__init__()
        self.host_api = compute.HostAPI()

    @wsgi.expected_errors((403,))
    @validation.query_schema(schema.cached_bases_query)
    @validation.response_body_schema(schema.cached_bases_response)
    def index(self, req):
        context = req.environ['nova.context']
        policies.authorize(context, 'hosts')
        nodes = self.host_api.compute_node_get_all(context)
        return {'hosts': sorted((host_entry(n) for n in nodes),
                                key=lambda h: (h['host'] or '', h['node'] or ''))}


def resource():
    """The ``wsgi.Resource`` of ``GET /os-cloudlet-bases``."""
    return wsgi.Resource(CachedBasesController())


ROUTES = ((PATH, {'GET': [resource, 'index']}),)
