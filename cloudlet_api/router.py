"""The paste app that adds ``os-cloudlet`` to nova's v2.1 API.

Enable it in nova's ``api-paste.ini``::

    [app:osapi_compute_app_v21]
    paste.app_factory = cloudlet_api.router:APIRouter.factory

Nova 34 builds its routes from the static ``ROUTE_LIST``; every (path, method) pair gets
its own ``wsgi.Resource``. After nova has built them, this router registers the cloudlet
actions on the resource behind ``POST /servers/{id}/action``, makes ``POST /servers`` check
``overlay_url`` metadata against the overlay fetch policy first, and swaps the resource behind
``GET /extensions[/{id}]`` for one that also lists ``os-cloudlet``; it adds one resource of
its own, ``GET /os-cloudlet-bases`` (:mod:`cloudlet_api.cached_bases`), through nova's
``custom_routes``. Nothing else changes.
The nova internals used here are pinned by ``tests/compute_nova/test_contract.py``.
"""

from oslo_log import log as logging

from nova.api.openstack.compute import extension_info
from nova.api.openstack.compute import routes
from nova.api.openstack import wsgi
from nova.policies import extensions as ext_policies

from cloudlet_api import cached_bases
from cloudlet_api import cloudlet
from cloudlet_api import servers

LOG = logging.getLogger(__name__)

SERVER_ACTION_PATH = '/servers/{id}/action'
SERVERS_PATH = '/servers'
EXTENSIONS_PATHS = ('/extensions', '/extensions/{id}')


class CloudletExtensionInfoController(extension_info.ExtensionInfoController):
    """``GET /extensions``: nova's fixed list plus ``os-cloudlet``."""

    def index(self, req):
        result = super().index(req)
        return {'extensions': list(result['extensions']) + [cloudlet.EXTENSION_INFO]}

    def show(self, req, id):
        if id == cloudlet.ALIAS:
            req.environ['nova.context'].can(ext_policies.BASE_POLICY_NAME, target={})
            return {'extension': cloudlet.EXTENSION_INFO}
        return super().show(req, id)


def _routes_for(mapper, path, method):
    """The routes nova connected for ``path`` (with and without {project_id})."""
    found = [r for r in mapper.matchlist
             if r.routepath.endswith(path) and method in (r.conditions or {}).get('method', ())
             and r.routepath in (path, '/{project_id}' + path)]
    if not found:
        raise RuntimeError("nova's API router has no %s %s route; cloudlet_api does not "
                           "support this nova" % (method, path))
    return found


class APIRouter(routes.APIRouterV21):
    """nova's ``APIRouterV21`` plus the ``os-cloudlet`` server actions, extension and
    ``GET /os-cloudlet-bases``."""

    def __init__(self, custom_routes=None):
        super().__init__(tuple(custom_routes or ()) + cached_bases.ROUTES)
        actions = cloudlet.CloudletController()
        resources = {id(r.defaults['controller']): r.defaults['controller']
                     for r in _routes_for(self.map, SERVER_ACTION_PATH, 'POST')}
        for resource in resources.values():
            resource.register_subcontroller_actions(actions)
        creators = {id(r.defaults['controller']): r.defaults['controller']
                    for r in _routes_for(self.map, SERVERS_PATH, 'POST')}
        url_policy = servers.overlay_url_policy()
        for resource in creators.values():
            servers.check_overlays_on_create(resource.controller, url_policy)
        extensions = wsgi.Resource(CloudletExtensionInfoController())
        for path in EXTENSIONS_PATHS:
            for route in _routes_for(self.map, path, 'GET'):
                route.defaults['controller'] = extensions
        LOG.info("os-cloudlet API extension loaded: actions %s",
                 ", ".join(sorted(actions.wsgi_actions)))
