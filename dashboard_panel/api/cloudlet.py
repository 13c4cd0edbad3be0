"""The one module of the panel that talks to OpenStack (and to overlay URLs).

One thin function per call, through Horizon's own API layer (``openstack_dashboard.api``):
Glance through its glance helpers (``image_list_detailed``, ``image_get``, ``image_delete``,
``glanceclient``), Nova through python-novaclient (``api._nova.novaclient`` at
``COMPUTE_MICROVERSION``; the ``os-cloudlet`` server actions are posted with novaclient's
own HTTP client, as plugins do for custom actions), flavors and networks through
``api.nova``/``api.neutron``. So the panel inherits Horizon's token handling, endpoint
selection (``OPENSTACK_ENDPOINT_TYPE``, the user's region), SSL settings and per-request
client caching. The logic the command lines share lives in the client core
(``client.core``: action bodies, image-type filters, base import and delete); base import and
delete run the core's code over ``HorizonImages``, Horizon's Glance in the shape the core
calls. Results are small plain objects (``BaseImage``, ``Overlay``, ``Instance``,
``Flavor``), so tables and tests never see client resources. Every failure leaves as
``CloudletAPIError`` whose text is the reason (registered as recoverable: Horizon's
``exceptions.handle`` shows it as a message).
"""

import functools
import logging
import types
import urllib.parse

import requests
from django.conf import settings
from glanceclient import exc as glance_exceptions
from horizon import exceptions as horizon_exceptions
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from novaclient import exceptions as nova_exceptions
from openstack import exceptions as sdk_exceptions
from openstack_dashboard import exceptions as dashboard_exceptions
from openstack_dashboard.api import _nova as horizon_nova
from openstack_dashboard.api import glance
from openstack_dashboard.api import neutron
from openstack_dashboard.api import nova

from client.core import bases, handoff as core_handoff, lookups, overlays, synthesis
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import CloudletError
from cloudlet_compute.read import fetchpolicy
from dashboard_panel.exceptions import CloudletAPIError, CloudletNotFound

LOG = logging.getLogger(__name__)

RESUMED = "resumed"
SYNTHESIZED = "synthesized"
OVERLAY_URL_SCHEMES = ("http", "https")
# The compute microversion of every Nova call: ``networks: "none"`` on create (2.37) and
# the flavor's name in server records (2.47). The os-cloudlet actions need no microversion.
COMPUTE_MICROVERSION = "2.47"
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
# What Horizon's clients raise (openstack_dashboard.exceptions), and the rest a call may.
API_ERRORS = tuple(set(dashboard_exceptions.RECOVERABLE + dashboard_exceptions.NOT_FOUND
                       + dashboard_exceptions.UNAUTHORIZED)) + (
    horizon_exceptions.ServiceCatalogException, ks_exceptions.ClientException,
    CloudletError, requests.RequestException, OSError)


def handle_errors(fn):
    """Turn any client, HTTP or engine error into ``CloudletAPIError``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CloudletAPIError:
            raise
        except API_ERRORS as exc:
            cls = CloudletNotFound if isinstance(exc, dashboard_exceptions.NOT_FOUND) \
                else CloudletAPIError
            raise cls(_reason(exc)) from exc
    return wrapper


def _reason(exc):
    """The service's own message of ``exc`` on one line, with the HTTP status if any:
    ``"MESSAGE (HTTP STATUS)"`` (as the client core words a failed raw response)."""
    if isinstance(exc, nova_exceptions.ClientException):
        # NOTE: the class's http_status (a subclass per status); Horizon's test data
        # replaces __init__ with one that does not set ``code``.
        message, status = exc.message, getattr(exc, "http_status", None) or exc.code
    elif isinstance(exc, glance_exceptions.HTTPException):
        message, status = exc.details, exc.code
    elif isinstance(exc, sdk_exceptions.HttpException):
        details = exc.details if exc.details != exc.message else None
        message, status = details or exc.message, exc.status_code if details else None
    else:
        message, status = str(exc) or exc.__class__.__name__, None
    message = " ".join(str(message).split())
    return "%s (HTTP %s)" % (message, status) if status else message


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
    """A server resumed from a base VM or synthesized from an overlay (from novaclient's
    server record, whose extended attributes carry their API names)."""

    def __init__(self, server):
        self.id, self.name, self.status = server.id, server.name, server.status
        self.task_state = getattr(server, "OS-EXT-STS:task_state", None)
        # Nova's progress (0-100) of the server's task, e.g. a VM handoff (task migrating).
        self.progress = getattr(server, "progress", None)
        power_state = getattr(server, "OS-EXT-STS:power_state", None)
        self.power_state = POWER_STATES.get(power_state, power_state)
        self.image_id = (server.image or {}).get("id")
        flavor = server.flavor or {}
        self.flavor_name = flavor.get("original_name") or flavor.get("name") or flavor.get("id")
        self.metadata = dict(server.metadata or {})
        self.overlay_url = self.metadata.get(model.METADATA_OVERLAY_URL)
        overlay_image = self.metadata.get(model.METADATA_OVERLAY_IMAGE)
        self.cloudlet_type = SYNTHESIZED if self.overlay_url or overlay_image else RESUMED
        self.fault = (getattr(server, "fault", None) or {}).get("message")
        self.ips = [a["addr"] for addrs in (server.addresses or {}).values() for a in addrs]
        self.created_at = getattr(server, "created", None)


class Flavor:
    """A flavor's size."""

    def __init__(self, flavor):
        self.id, self.name = flavor.id, flavor.name
        self.vcpus, self.ram, self.disk = flavor.vcpus, flavor.ram, flavor.disk


# --- the clients --------------------------------------------------------------------------

def _novaclient(request):
    """The user's novaclient (Horizon caches it per request and microversion)."""
    return horizon_nova.novaclient(request, version=COMPUTE_MICROVERSION)


def _server_action(request, server_id, body):
    """POST a server action (``os-cloudlet``'s are not in novaclient); its JSON answer."""
    _resp, answer = _novaclient(request).client.post("/servers/%s/action" % server_id, body=body)
    return answer or {}


class HorizonImages:
    """Horizon's Glance for the user of ``request``, as the calls of openstacksdk's image
    proxy that the client core makes (``conn.image``), so base import and delete run the
    core's code. Images are ``openstack_dashboard.api.glance.Image``s."""

    def __init__(self, request):
        self.request = request

    def images(self, **filters):
        return glance.image_list_detailed(self.request, filters=filters)[0]

    def get_image(self, image_id):
        return glance.image_get(self.request, image_id)

    def find_image(self, image_id, ignore_missing=True):
        try:
            return self.get_image(image_id)
        except glance_exceptions.HTTPNotFound:
            if not ignore_missing:
                raise
            return None

    def delete_image(self, image_id, ignore_missing=False):
        try:
            glance.image_delete(self.request, image_id)
        except glance_exceptions.HTTPNotFound:
            if not ignore_missing:
                raise

    def create_image(self, name, data, disk_format, container_format, visibility,
                     **properties):
        """Create image ``name`` and upload ``data`` (a file) into it; an image whose upload
        fails is deleted again."""
        properties.pop("allow_duplicates", None)   # openstacksdk's; Glance allows them
        client = glance.glanceclient(self.request)
        image = client.images.create(name=name, disk_format=disk_format,
                                     container_format=container_format,
                                     visibility=visibility, **properties)
        try:
            client.images.upload(image.id, data)
        except BaseException:
            self.delete_image(image.id, ignore_missing=True)
            raise
        return glance.Image(image)


def _cloud(request):
    """What the client core calls ``conn``, for the calls it makes on the panel's behalf."""
    return types.SimpleNamespace(image=HorizonImages(request))


def _images_of_type(request, image_type, base_id=None, **filters):
    """The images of ``cloudlet_type`` ``image_type`` (and base id ``base_id``, if given):
    Glance filters on the properties, ``lookups.of_type`` keeps the client core's rule."""
    filters[model.PROPERTY_TYPE] = image_type
    if base_id is not None:
        filters[model.PROPERTY_BASE_ID] = base_id
    # NOTE: glanceclient rewrites the filters it is given (encoded, with a limit).
    images = glance.image_list_detailed(request, filters=dict(filters))[0]
    return [i for i in images if lookups.of_type(i, image_type, base_id)]


def _verify():
    """Horizon's TLS verification (as ``openstack_dashboard.api`` sets it)."""
    if getattr(settings, "OPENSTACK_SSL_NO_VERIFY", False):
        return False
    return getattr(settings, "OPENSTACK_SSL_CACERT", None) or True


# --- base VMs -----------------------------------------------------------------------------

@handle_errors
def base_image_list(request):
    """Base VMs (their disk images) visible to the project."""
    return [BaseImage(i) for i in _images_of_type(request, model.BASE_DISK)]


@handle_errors
def base_image_get(request, image_id):
    return BaseImage(glance.image_get(request, image_id))


@handle_errors
def base_image_find(request, base_id):
    """The active base disk image of base VM ``base_id``, or None."""
    image = lookups.first_active(_images_of_type(request, model.BASE_DISK, base_id))
    return BaseImage(image) if image is not None else None


@handle_errors
def import_base(request, package_path, name=None, visibility="private"):
    """Import base package ``package_path`` (a file on this server) as four linked images;
    return ``{cloudlet_type: image id}`` (``client.core.bases``)."""
    return bases.import_base_package(_cloud(request), package_path, name=name or None,
                                     visibility=visibility)


@handle_errors
def delete_base(request, image_id):
    """Delete a base VM: the three linked images first, the disk image last (it names them,
    so a failed delete can be retried)."""
    bases.delete_base(_cloud(request), image_id)


@handle_errors
def resume_base(request, name, image_id, flavor_id, network_id=None):
    """``POST /servers`` from a base disk image: the driver restores the base's memory.
    Returns the new server's id."""
    return _create_server(request, name, image_id, flavor_id, network_id)


@handle_errors
def synthesize(request, name, image_id, flavor_id, overlay_url=None, network_id=None,
               overlay_image=None):
    """``POST /servers`` from the base with ``metadata.overlay_url`` (or ``overlay_image``,
    a VM overlay image id, which nova-compute reads from Glance): VM synthesis. Returns the
    new server's id."""
    return _create_server(request, name, image_id, flavor_id, network_id,
                          synthesis.synthesis_metadata(overlay_url, overlay_image))


def _create_server(request, name, image_id, flavor_id, network_id, metadata=None):
    # NOTE: the id only; any other attribute of the answer makes novaclient GET the server.
    nics = [{"net-id": network_id}] if network_id else "none"
    return _novaclient(request).servers.create(name, image_id, flavor_id, meta=metadata,
                                               nics=nics).id


# --- overlays -----------------------------------------------------------------------------

@handle_errors
def overlay_list(request):
    """The project's VM overlay images."""
    return [Overlay(i) for i in _images_of_type(request, model.OVERLAY,
                                                owner=request.user.project_id)]


@handle_errors
def overlay_get(request, image_id):
    return Overlay(glance.image_get(request, image_id))


@handle_errors
def delete_overlay(request, image_id):
    glance.image_delete(request, image_id)


@handle_errors
def create_overlay(request, instance_id, overlay_name):
    """``cloudlet-overlay-finish`` on a resumed base VM; return the overlay's image id."""
    return _server_action(request, instance_id, overlays.overlay_body(overlay_name))["overlay-id"]


@handle_errors
def download_overlay(request, image_id):
    """``(name, size, chunks)`` of overlay ``image_id``; ``chunks`` streams from Glance
    (glanceclient checks the data against the image's hash as it goes)."""
    image = glance.image_get(request, image_id)
    if (image.properties or {}).get(model.PROPERTY_TYPE) != model.OVERLAY:
        raise CloudletAPIError("image %s is not a VM overlay" % image_id)
    return image.name, image.size, glance.glanceclient(request).images.data(image_id)


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
    base_ids = {i.id for i in _images_of_type(request, model.BASE_DISK)}
    return [Instance(s) for s in _novaclient(request).servers.list(detailed=True)
            if (s.image or {}).get("id") in base_ids]


@handle_errors
def instance_get(request, instance_id):
    return Instance(_novaclient(request).servers.get(instance_id))


@handle_errors
def instance_delete(request, instance_id):
    nova.server_delete(request, instance_id)


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
    return _server_action(request, instance_id, body).get("handoff", endpoint)


@handle_errors
def handoff_residue(request, instance_id, image_name):
    """Store the instance's current state as VM overlay image ``image_name`` in this cloud's
    Glance (``cloudlet-handoff`` to ``file://NAME``); return the image id. The instance keeps
    running."""
    if not core_handoff.residue_name_ok(image_name):
        raise CloudletAPIError("%r is not an image name" % image_name)
    return _server_action(request, instance_id,
                          core_handoff.residue_body(image_name))["handoff"]


# --- flavors and networks -----------------------------------------------------------------

@handle_errors
def flavor_list(request):
    return [Flavor(f) for f in nova.flavor_list(request)]


@handle_errors
def network_list(request):
    """``[(id, name)]`` of the networks the project can attach to."""
    return [(n.id, n.name)
            for n in neutron.network_list_for_tenant(request, request.user.project_id)]
