"""The one module of the panel that talks to OpenStack (and to overlay URLs).

One thin function per call, over the client core (``client.core``: the server actions, nova's
error messages, the base VM image lookups, base import and delete are the ones
``cloudlet-client`` uses). The connection is the logged-in user's, as Horizon's own API
modules build theirs (``openstack_dashboard.api``): the request's token, the endpoints
``openstack_dashboard.api.base.url_for`` picks from the catalog (``OPENSTACK_ENDPOINT_TYPE``,
the user's region) and Horizon's SSL settings; no request to Keystone. Results are small
plain objects (``BaseImage``, ``Overlay``, ``Instance``, ``Flavor``), so tables and tests
never see SDK resources. Every failure leaves as ``CloudletAPIError`` whose text is the
reason (registered as recoverable: Horizon's ``exceptions.handle`` shows it as a message).
"""

import functools
import logging
import urllib.parse

import requests
from django.conf import settings
from horizon import exceptions as horizon_exceptions
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from openstack import exceptions as sdk_exceptions
from openstack_auth import utils as auth_utils
from openstack_dashboard.api import base as horizon_api

from client.core import bases, handoff as core_handoff, lookups, overlays, sessions, synthesis
from client.core.transfer import DOWNLOAD_PIECE
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import CloudletError
from cloudlet_compute.read import fetchpolicy
from dashboard_panel.exceptions import CloudletAPIError, CloudletNotFound

LOG = logging.getLogger(__name__)

RESUMED = "resumed"
SYNTHESIZED = "synthesized"
OVERLAY_URL_SCHEMES = ("http", "https")
# How long the synthesis form waits for an overlay URL (HEAD and the meta read).
# The overlay fetch policy of this Horizon server (cloudlet_compute.read.fetchpolicy; the
# defaults refuse loopback, link-local, this host's addresses and ports other than 80/443).
# Settings: CLOUDLET_OVERLAY_ALLOWED_HOSTS, CLOUDLET_OVERLAY_DISALLOWED_HOSTS,
# CLOUDLET_OVERLAY_ALLOWED_PORTS, as nova's [cloudlet] overlay_* options.
META_READ_MAX = 64 << 20   # a server without Range support: what the panel reads at most
POWER_STATES = {0: "NO STATE", 1: "RUNNING", 3: "PAUSED", 4: "SHUTDOWN", 6: "CRASHED",
                7: "SUSPENDED"}
KEYSTONE_URL_SCHEMES = ("http", "https")
# How long the handoff form waits for the destination Keystone.
KEYSTONE_TIMEOUT = 30
DEFAULT_DOMAIN = "Default"
# The services the panel calls (``connection``).
SERVICES = ("compute", "image", "network")


def handle_errors(fn):
    """Turn any SDK, keystoneauth, HTTP or engine error into ``CloudletAPIError``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CloudletAPIError:
            raise
        except (sdk_exceptions.SDKException, ks_exceptions.ClientException,
                CloudletError, requests.RequestException, OSError) as exc:
            raise _api_error(exc) from exc
    return wrapper


def _api_error(exc):
    """The ``CloudletAPIError`` for ``exc``. An SDK or keystoneauth exception the client core
    translated is reported as the service said it (its ``__cause__``)."""
    if isinstance(exc, CloudletError) and isinstance(
            exc.__cause__, (sdk_exceptions.SDKException, ks_exceptions.ClientException)):
        exc = exc.__cause__
    if isinstance(exc, sdk_exceptions.NotFoundException):
        return CloudletNotFound(_http_reason(exc))
    if isinstance(exc, sdk_exceptions.HttpException):
        return CloudletAPIError(_http_reason(exc))
    return CloudletAPIError(str(exc) or exc.__class__.__name__)


def _http_reason(exc):
    """The server's own message of an SDK HTTP error, else its summary."""
    details = getattr(exc, "details", None)
    if details and details != exc.message:
        return "%s (HTTP %s)" % (details, exc.status_code)
    return str(exc.message or exc)


# --- plain objects ------------------------------------------------------------------------

class BaseImage:
    """A base VM: its disk image, which links the other three images."""

    def __init__(self, image):
        props = image.properties or {}
        self.id, self.name, self.status = image.id, image.name, image.status
        self.visibility = image.visibility
        self.is_public = image.visibility == "public"
        self.base_id = props.get(model.PROPERTY_BASE_ID)
        self.image_type = props.get("image_type")
        self.min_ram, self.min_disk = image.min_ram or 0, image.min_disk or 0
        self.size = image.size
        self.linked = bases.linked_ids(image)


class Overlay:
    """A VM overlay image."""

    def __init__(self, image):
        props = image.properties or {}
        self.id, self.name, self.status = image.id, image.name, image.status
        self.size = image.size
        self.base_id = props.get(model.PROPERTY_BASE_ID)
        self.instance_uuid = props.get("instance_uuid")
        self.created_at = image.created_at


class Instance:
    """A server resumed from a base VM or synthesized from an overlay."""

    def __init__(self, server):
        self.id, self.name, self.status = server.id, server.name, server.status
        self.task_state = server.task_state
        # Nova's progress (0-100) of the server's task, e.g. a VM handoff (task migrating).
        self.progress = getattr(server, "progress", None)
        self.power_state = POWER_STATES.get(server.power_state, server.power_state)
        self.image_id = (server.image or {}).get("id")
        flavor = server.flavor or {}
        self.flavor_name = flavor.get("original_name") or flavor.get("name") or flavor.get("id")
        self.metadata = dict(server.metadata or {})
        self.overlay_url = self.metadata.get(model.METADATA_OVERLAY_URL)
        overlay_image = self.metadata.get(model.METADATA_OVERLAY_IMAGE)
        self.cloudlet_type = SYNTHESIZED if self.overlay_url or overlay_image else RESUMED
        self.fault = (server.fault or {}).get("message")
        self.ips = [a["addr"] for addrs in (server.addresses or {}).values() for a in addrs]
        self.created_at = server.created_at


class Flavor:
    """A flavor's size."""

    def __init__(self, flavor):
        self.id, self.name = flavor.id, flavor.name
        self.vcpus, self.ram, self.disk = flavor.vcpus, flavor.ram, flavor.disk


# --- the connection -----------------------------------------------------------------------

def _verify():
    """Horizon's TLS verification (as ``openstack_dashboard.api`` sets it)."""
    if getattr(settings, "OPENSTACK_SSL_NO_VERIFY", False):
        return False
    return getattr(settings, "OPENSTACK_SSL_CACERT", None) or True


def _endpoint(request, service_type):
    """The catalog's URL of ``service_type`` for the user, or None if it lists none."""
    try:
        return horizon_api.url_for(request, service_type)
    except horizon_exceptions.ServiceCatalogException:
        return None


def connection(request):
    """The user's openstacksdk connection (one per Django request): the request's token,
    sent to the endpoints Horizon uses (``client.core.sessions.token_connection``)."""
    conn = getattr(request, "_cloudlet_conn", None)
    if conn is None:
        user = request.user
        conn = sessions.token_connection(
            user.token.id, {s: _endpoint(request, s) for s in SERVICES}, verify=_verify(),
            region_name=getattr(user, "services_region", None),
            original_ip=auth_utils.get_client_ip(request), app_name="horizon-cloudlet")
        request._cloudlet_conn = conn
    return conn


# --- base VMs -----------------------------------------------------------------------------

@handle_errors
def base_image_list(request):
    """Base VMs (their disk images) visible to the project."""
    return [BaseImage(i) for i in lookups.images_of_type(connection(request), model.BASE_DISK)]


@handle_errors
def base_image_get(request, image_id):
    return BaseImage(connection(request).image.get_image(image_id))


@handle_errors
def base_image_find(request, base_id):
    """The active base disk image of base VM ``base_id``, or None."""
    image = lookups.active_base_image(connection(request), base_id)
    return BaseImage(image) if image is not None else None


@handle_errors
def import_base(request, package_path, name=None, visibility="private"):
    """Import base package ``package_path`` (a file on this server) as four linked images;
    return ``{cloudlet_type: image id}`` (``client.core.bases``)."""
    return bases.import_base_package(connection(request), package_path, name=name or None,
                                     visibility=visibility)


@handle_errors
def delete_base(request, image_id):
    """Delete a base VM: the three linked images first, the disk image last (it names them,
    so a failed delete can be retried)."""
    bases.delete_base(connection(request), image_id)


@handle_errors
def resume_base(request, name, image_id, flavor_id, network_id=None):
    """``POST /servers`` from a base disk image: the driver restores the base's memory."""
    return Instance(_create_server(request, name, image_id, flavor_id, network_id))


@handle_errors
def synthesize(request, name, image_id, flavor_id, overlay_url=None, network_id=None,
               overlay_image=None):
    """``POST /servers`` from the base with ``metadata.overlay_url`` (or ``overlay_image``,
    a VM overlay image id, which nova-compute reads from Glance): VM synthesis."""
    return Instance(_create_server(request, name, image_id, flavor_id, network_id,
                                   synthesis.synthesis_metadata(overlay_url, overlay_image)))


def _create_server(request, name, image_id, flavor_id, network_id, metadata=None):
    networks = [{"uuid": network_id}] if network_id else "none"
    return bases.create_server(connection(request), name, image_id, flavor_id, networks,
                               metadata)


# --- overlays -----------------------------------------------------------------------------

@handle_errors
def overlay_list(request):
    """The project's VM overlay images."""
    return [Overlay(i) for i in lookups.images_of_type(connection(request), model.OVERLAY,
                                                        owner=request.user.project_id)]


@handle_errors
def overlay_get(request, image_id):
    return Overlay(connection(request).image.get_image(image_id))


@handle_errors
def delete_overlay(request, image_id):
    connection(request).image.delete_image(image_id)


@handle_errors
def create_overlay(request, instance_id, overlay_name):
    """``cloudlet-overlay-finish`` on a resumed base VM; return the overlay's image id."""
    return sessions.server_action(connection(request), instance_id,
                                  overlays.overlay_body(overlay_name))["overlay-id"]


@handle_errors
def download_overlay(request, image_id):
    """``(name, size, chunks)`` of overlay ``image_id``; ``chunks`` streams from Glance."""
    conn = connection(request)
    image = conn.image.get_image(image_id)
    if (image.properties or {}).get(model.PROPERTY_TYPE) != model.OVERLAY:
        raise CloudletAPIError("image %s is not a VM overlay" % image_id)
    resp = conn.image.download_image(image, stream=True)
    return image.name, image.size, resp.iter_content(DOWNLOAD_PIECE)


@handle_errors
def overlay_meta(request, url):
    """Read the meta of the overlay at ``url`` (one Range request for its tail), under this
    Horizon's overlay fetch policy (``client.core.synthesis.read_meta``)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in OVERLAY_URL_SCHEMES or not parsed.hostname:
        raise CloudletAPIError("%s is not an http(s) URL" % url)
    return synthesis.read_meta(url, getattr(settings, "FILE_UPLOAD_TEMP_DIR", None),
                               policy=fetch_policy(), max_bytes=META_READ_MAX)


def fetch_policy():
    """This Horizon's overlay fetch policy from its CLOUDLET_OVERLAY_* settings: built once
    per value of those settings (and kept, with the host addresses it finds on first use),
    not once per request."""
    return _fetch_policy(
        tuple(getattr(settings, "CLOUDLET_OVERLAY_ALLOWED_HOSTS", ())),
        tuple(getattr(settings, "CLOUDLET_OVERLAY_DISALLOWED_HOSTS", ())),
        tuple(getattr(settings, "CLOUDLET_OVERLAY_ALLOWED_PORTS", fetchpolicy.DEFAULT_PORTS)))


@functools.lru_cache(maxsize=8)
def _fetch_policy(allowed_hosts, disallowed_hosts, allowed_ports):
    return fetchpolicy.FetchPolicy(allowed_hosts, disallowed_hosts, allowed_ports)


# --- instances ----------------------------------------------------------------------------

@handle_errors
def instance_list(request):
    """The project's servers made from a base VM (resumed or synthesized)."""
    conn = connection(request)
    base_ids = {i.id for i in lookups.images_of_type(conn, model.BASE_DISK)}
    return [Instance(s) for s in conn.compute.servers(details=True)
            if (s.image or {}).get("id") in base_ids]


@handle_errors
def instance_get(request, instance_id):
    return Instance(connection(request).compute.get_server(instance_id))


@handle_errors
def instance_delete(request, instance_id):
    connection(request).compute.delete_server(instance_id)


def _keystone_v3_url(url):
    """``url`` checked (http(s) with a host), with ``/v3`` appended if it has no path."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in KEYSTONE_URL_SCHEMES or not parsed.hostname:
        raise CloudletAPIError("%s is not an http(s) URL" % url)
    if parsed.path.strip("/") == "":
        return urllib.parse.urlunsplit(parsed._replace(path="/v3"))
    return url.strip()


def destination(keystone_url, username, password, project_name,
                user_domain=DEFAULT_DOMAIN, project_domain=DEFAULT_DOMAIN):
    """``(compute endpoint, token)`` of a destination cloud: a project-scoped token from its
    Keystone (v3 password), and the public compute endpoint of its catalog. The credentials
    are used for this one request and not kept."""
    url = _keystone_v3_url(keystone_url)
    auth = v3.Password(auth_url=url, username=username, password=password,
                       project_name=project_name, user_domain_name=user_domain,
                       project_domain_name=project_domain)
    sess = ks_session.Session(auth=auth, verify=_verify(), timeout=KEYSTONE_TIMEOUT)
    try:
        token = sess.get_token()
        endpoint = sess.get_endpoint(service_type="compute", interface="public")
    except ks_exceptions.Unauthorized as exc:
        raise CloudletAPIError("the destination Keystone %s refused the credentials of user "
                               "%s in project %s" % (url, username, project_name)) from exc
    except (ks_exceptions.ConnectFailure, ks_exceptions.ConnectTimeout) as exc:
        raise CloudletAPIError("cannot reach the destination Keystone %s" % url) from exc
    except ks_exceptions.EndpointNotFound as exc:
        raise CloudletAPIError("the destination's catalog lists no public compute "
                               "endpoint") from exc
    except ks_exceptions.ClientException as exc:
        raise CloudletAPIError("destination Keystone %s: %s" % (url, exc)) from exc
    if not endpoint:
        raise CloudletAPIError("the destination's catalog lists no public compute endpoint")
    return endpoint, token


@handle_errors
def handoff(request, instance_id, keystone_url, username, password, project_name,
            name=None, user_domain=DEFAULT_DOMAIN, project_domain=DEFAULT_DOMAIN):
    """VM handoff of ``instance_id`` to another cloud (``cloudlet-handoff``), named ``name``
    there (default: the same name). Returns the destination compute endpoint. The
    instance's task is then ``migrating`` with rising progress; once the destination runs
    it, the instance here is deleted."""
    endpoint, token = destination(keystone_url, username, password, project_name,
                                  user_domain, project_domain)
    body = core_handoff.handoff_body(endpoint, token, name)
    return sessions.server_action(connection(request), instance_id, body).get("handoff",
                                                                              endpoint)


@handle_errors
def handoff_residue(request, instance_id, image_name):
    """Store the instance's current state as VM overlay image ``image_name`` in this cloud's
    Glance (``cloudlet-handoff`` to ``file://NAME``); return the image id. The instance keeps
    running."""
    if not core_handoff.residue_name_ok(image_name):
        raise CloudletAPIError("%r is not an image name" % image_name)
    return sessions.server_action(connection(request), instance_id,
                                  core_handoff.residue_body(image_name))["handoff"]


# --- flavors and networks -----------------------------------------------------------------

@handle_errors
def flavor_list(request):
    return [Flavor(f) for f in connection(request).compute.flavors(details=True)]


@handle_errors
def network_list(request):
    """``[(id, name)]`` of the networks the project can attach to."""
    conn = connection(request)
    return [(n.id, n.name) for n in conn.network.networks()]
