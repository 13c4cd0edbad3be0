"""``POST /servers`` with synthesis metadata: 400 up front, before nova creates anything, when
the cloud's overlay fetch policy refuses ``overlay_url`` (its scheme, host, addresses or port),
when ``overlay_image`` is not a VM overlay image the user can see, or when both are given.

nova-compute checks again when it fetches (``[cloudlet] overlay_*`` options, the same ones
here, read once at start into the same ``OverlayURLPolicy``): this check answers the user at
once; that one is the one that counts. A host that
does not resolve here passes (the compute node may resolve it).
"""

import functools
from urllib import parse

import nova.conf
import webob

from nova import exception
from nova.image import glance as nova_glance

from cloudlet_compute.errors import FetchError
from cloudlet_compute.nova import conf as cloudlet_conf
from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova import glance

CONF = nova.conf.CONF
cloudlet_conf.register_opts(CONF)


def overlay_url_policy():
    """The ``[cloudlet] overlay_*`` options as one policy, read once when the API starts."""
    try:
        return engine_adapter.OverlayURLPolicy.from_options(CONF.cloudlet)
    except ValueError as exc:
        raise exception.InvalidConfiguration("[cloudlet] %s" % exc) from None


def check_overlay_url(url, policy):
    """Raise 400 if ``policy`` (an ``OverlayURLPolicy``) refuses ``url``."""
    try:
        scheme = policy.check_scheme(url)
    except engine_adapter.RefusedScheme as exc:
        raise webob.exc.HTTPBadRequest(explanation=str(exc)) from None
    if scheme not in ("http", "https"):
        return
    try:
        policy.fetch.check(parse.urlsplit(url))
    except engine_adapter.RefusedURL as exc:
        raise webob.exc.HTTPBadRequest(explanation=str(exc)) from None
    except (FetchError, ValueError):
        pass   # unresolvable here, or a malformed port: the compute node decides


def check_overlay_image(context, image_id):
    """Raise 400 unless ``image_id`` is a VM overlay image visible to ``context``."""
    try:
        image = nova_glance.API().get(context, image_id)
    except (exception.ImageNotFound, exception.ImageNotAuthorized, exception.Invalid):
        raise webob.exc.HTTPBadRequest(
            explanation="overlay_image %s not found" % image_id) from None
    if (image.get('properties') or {}).get(glance.PROPERTY_TYPE) != glance.OVERLAY:
        raise webob.exc.HTTPBadRequest(
            explanation="overlay_image %s is not a VM overlay image" % image_id)


def check_overlays_on_create(controller, policy):
    """Make ``controller.create`` (nova's ServersController) check synthesis metadata first
    (``overlay_url`` against ``policy``, an ``OverlayURLPolicy``)."""
    create = controller.create

    @functools.wraps(create)
    def create_checked(req, body):
        server = body.get('server') if isinstance(body, dict) else None
        metadata = server.get('metadata') if isinstance(server, dict) else None
        if isinstance(metadata, dict):
            url = metadata.get(glance.METADATA_OVERLAY_URL)
            image_id = metadata.get(glance.METADATA_OVERLAY_IMAGE)
            if url and image_id:
                raise webob.exc.HTTPBadRequest(explanation=(
                    "give overlay_url or overlay_image, not both"))
            if isinstance(url, str) and url:
                check_overlay_url(url, policy)
            if isinstance(image_id, str) and image_id:
                check_overlay_image(req.environ['nova.context'], image_id)
        return create(req, body=body)

    controller.create = create_checked
