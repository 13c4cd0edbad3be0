"""OpenStack++ Nova API extension ``os-cloudlet``.

Stock nova 34 has no API extension loading, so this package plugs in through
configuration only: ``api-paste.ini`` points ``[app:osapi_compute_app_v21]`` at
:class:`cloudlet_api.router.APIRouter`, a subclass of nova's ``APIRouterV21`` that adds the
cloudlet server actions and lists ``os-cloudlet`` in ``GET /extensions``.

Modules: ``router`` (the paste app), ``cloudlet`` (the controller: server actions),
``cached_bases`` (``GET /os-cloudlet-bases``: the bases each host caches),
``schemas/cloudlet`` (request and response JSON schemas), ``policies/cloudlet`` (oslo.policy
defaults), ``glance`` (the Glance model of base VMs and overlays), ``rpcapi`` (casts to the
``cloudlet`` RPC namespace of nova-compute). See ``doc/nova-integration.md``.
"""

# The value of ``paste.app_factory`` in ``[app:osapi_compute_app_v21]`` that enables us.
PASTE_APP_FACTORY = "cloudlet_api.router:APIRouter.factory"
