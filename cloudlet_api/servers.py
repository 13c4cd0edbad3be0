"""``POST /servers`` with ``overlay_url`` metadata: 400 up front when the cloud's overlay fetch
policy refuses the URL (its scheme, host, addresses or port), before nova creates anything.

nova-compute checks again when it fetches (``[cloudlet] overlay_*`` options, the same ones
here): this check answers the user at once; that one is the one that counts. A host that
does not resolve here passes (the compute node may resolve it).
"""

import functools
from urllib import parse

import nova.conf
import webob

from cloudlet_compute.errors import FetchError
from cloudlet_compute.nova import conf as cloudlet_conf
from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova import glance

CONF = nova.conf.CONF
cloudlet_conf.register_opts(CONF)


def check_overlay_url(url):
    """Raise 400 if the overlay fetch policy refuses ``url``."""
    scheme = parse.urlsplit(url).scheme
    if scheme not in CONF.cloudlet.overlay_url_schemes:
        raise webob.exc.HTTPBadRequest(
            explanation="overlay_url scheme %r is not allowed by this cloud (allowed: %s)"
            % (scheme, ", ".join(CONF.cloudlet.overlay_url_schemes)))
    if scheme not in ("http", "https"):
        return
    policy = engine_adapter.fetch_policy(CONF.cloudlet.overlay_allowed_hosts,
                                         CONF.cloudlet.overlay_disallowed_hosts,
                                         CONF.cloudlet.overlay_allowed_ports)
    try:
        policy.check(parse.urlsplit(url))
    except engine_adapter.RefusedURL as exc:
        raise webob.exc.HTTPBadRequest(explanation=str(exc)) from None
    except (FetchError, ValueError):
        pass   # unresolvable here, or a malformed port: the compute node decides


def check_overlays_on_create(controller):
    """Make ``controller.create`` (nova's ServersController) check ``overlay_url`` first."""
    create = controller.create

    @functools.wraps(create)
    def create_checked(req, body):
        server = body.get('server') if isinstance(body, dict) else None
        metadata = server.get('metadata') if isinstance(server, dict) else None
        url = metadata.get(glance.METADATA_OVERLAY_URL) if isinstance(metadata, dict) else None
        if isinstance(url, str) and url:
            check_overlay_url(url)
        return create(req, body=body)

    controller.create = create_checked
