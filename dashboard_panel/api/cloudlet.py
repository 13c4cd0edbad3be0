"""The one module of the panel that talks to OpenStack (and to overlay URLs).

One thin function per call. Each builds on an openstacksdk connection made from the
logged-in user's token and project (keystoneauth ``v3.Token``), so every request is the
user's own. Results are small plain objects (``BaseImage``, ``Overlay``, ``Instance``,
``Flavor``), so tables and tests never see SDK resources. Every failure leaves as
``CloudletAPIError`` whose text is the reason (registered as recoverable: Horizon's
``exceptions.handle`` shows it as a message).
"""

import functools
import logging
import urllib.parse

import requests
from django.conf import settings
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
import openstack
from openstack import exceptions as sdk_exceptions

from client import glance_import
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import CloudletError
from cloudlet_compute.read import overlayinfo
from dashboard_panel.exceptions import CloudletAPIError, CloudletNotFound

LOG = logging.getLogger(__name__)

RESUMED = "resumed"
SYNTHESIZED = "synthesized"
OVERLAY_URL_SCHEMES = ("http", "https")
# How long the synthesis form waits for an overlay URL (HEAD and the meta read).
URL_TIMEOUT = 20
POWER_STATES = {0: "NO STATE", 1: "RUNNING", 3: "PAUSED", 4: "SHUTDOWN", 6: "CRASHED",
                7: "SUSPENDED"}
HANDOFF_ACTION = "cloudlet-handoff"
KEYSTONE_URL_SCHEMES = ("http", "https")
# How long the handoff form waits for the destination Keystone.
KEYSTONE_TIMEOUT = 30
DEFAULT_DOMAIN = "Default"


def handle_errors(fn):
    """Turn any SDK, keystoneauth, HTTP or engine error into ``CloudletAPIError``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CloudletAPIError:
            raise
        except sdk_exceptions.NotFoundException as exc:
            raise CloudletNotFound(_http_reason(exc)) from exc
        except sdk_exceptions.HttpException as exc:
            raise CloudletAPIError(_http_reason(exc)) from exc
        except (sdk_exceptions.SDKException, ks_exceptions.ClientException,
                CloudletError, requests.RequestException, OSError) as exc:
            raise CloudletAPIError(str(exc) or exc.__class__.__name__) from exc
    return wrapper


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
        self.linked = {t: props.get(t) for t in model.LINKED_TYPES if props.get(t)}


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
        self.cloudlet_type = SYNTHESIZED if self.overlay_url else RESUMED
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
    return getattr(settings, "OPENSTACK_SSL_CACERT", None) or \
        not getattr(settings, "OPENSTACK_SSL_NO_VERIFY", False)


def connection(request):
    """The user's openstacksdk connection (one per Django request)."""
    conn = getattr(request, "_cloudlet_conn", None)
    if conn is None:
        user = request.user
        auth = v3.Token(auth_url=user.endpoint, token=user.token.id,
                        project_id=user.project_id)
        sess = ks_session.Session(auth=auth, verify=_verify())
        conn = openstack.connection.Connection(
            session=sess, region_name=getattr(user, "services_region", None),
            interface="public")
        request._cloudlet_conn = conn
    return conn


def _images_of_type(conn, image_type, **query):
    """Images of ``cloudlet_type`` ``image_type``. openstacksdk drops query parameters it
    does not know (such as image properties), so the type is checked here."""
    return [i for i in conn.image.images(**query)
            if (i.properties or {}).get(model.PROPERTY_TYPE) == image_type]


# --- base VMs -----------------------------------------------------------------------------

@handle_errors
def base_image_list(request):
    """Base VMs (their disk images) visible to the project."""
    return [BaseImage(i) for i in _images_of_type(connection(request), model.BASE_DISK)]


@handle_errors
def base_image_get(request, image_id):
    return BaseImage(connection(request).image.get_image(image_id))


@handle_errors
def base_image_find(request, base_id):
    """The active base disk image of base VM ``base_id``, or None."""
    for image in _images_of_type(connection(request), model.BASE_DISK):
        if image.status == "active" and image.properties.get(model.PROPERTY_BASE_ID) == base_id:
            return BaseImage(image)
    return None


@handle_errors
def import_base(request, package_path, name=None, visibility="private"):
    """Import base package ``package_path`` (a file on this server) as four linked images;
    return ``{cloudlet_type: image id}`` (``client.glance_import``)."""
    return glance_import.import_base_package(connection(request), package_path,
                                             name=name or None, visibility=visibility)


@handle_errors
def delete_base(request, image_id):
    """Delete a base VM: the three linked images first, the disk image last (it names them,
    so a failed delete can be retried)."""
    conn = connection(request)
    disk = BaseImage(conn.image.get_image(image_id))
    for linked_id in disk.linked.values():
        conn.image.delete_image(linked_id, ignore_missing=True)
    conn.image.delete_image(image_id)


@handle_errors
def resume_base(request, name, image_id, flavor_id, network_id=None):
    """``POST /servers`` from a base disk image: the driver restores the base's memory."""
    return Instance(_create_server(request, name, image_id, flavor_id, network_id))


@handle_errors
def synthesize(request, name, image_id, flavor_id, overlay_url, network_id=None):
    """``POST /servers`` from the base with ``metadata.overlay_url``: VM synthesis."""
    return Instance(_create_server(request, name, image_id, flavor_id, network_id,
                                   metadata={model.METADATA_OVERLAY_URL: overlay_url}))


def _create_server(request, name, image_id, flavor_id, network_id, metadata=None):
    networks = [{"uuid": network_id}] if network_id else "none"
    kwargs = {"metadata": metadata} if metadata else {}
    return connection(request).compute.create_server(
        name=name, image_id=image_id, flavor_id=flavor_id, networks=networks, **kwargs)


# --- overlays -----------------------------------------------------------------------------

@handle_errors
def overlay_list(request):
    """The project's VM overlay images."""
    return [Overlay(i) for i in _images_of_type(connection(request), model.OVERLAY,
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
    body = {"cloudlet-overlay-finish": {"overlay-name": overlay_name}}
    return _server_action(request, instance_id, body)["overlay-id"]


@handle_errors
def download_overlay(request, image_id):
    """``(name, size, chunks)`` of overlay ``image_id``; ``chunks`` streams from Glance."""
    conn = connection(request)
    image = conn.image.get_image(image_id)
    if (image.properties or {}).get(model.PROPERTY_TYPE) != model.OVERLAY:
        raise CloudletAPIError("image %s is not a VM overlay" % image_id)
    resp = conn.image.download_image(image, stream=True)
    return image.name, image.size, resp.iter_content(1 << 20)


@handle_errors
def overlay_meta(request, url):
    """Check overlay URL ``url`` (HEAD, then a read of its meta by Range) and return the
    overlay's meta (``cloudlet_compute.read.overlayinfo.info``)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in OVERLAY_URL_SCHEMES or not parsed.hostname:
        raise CloudletAPIError("%s is not an http(s) URL" % url)
    try:
        head = requests.head(url, allow_redirects=True, timeout=URL_TIMEOUT)
    except requests.RequestException as exc:
        raise CloudletAPIError("cannot reach %s: %s" % (url, exc)) from exc
    if head.status_code >= 400:
        raise CloudletAPIError("%s: HTTP %d %s" % (url, head.status_code, head.reason))
    meta, _size = overlayinfo.info(url, getattr(settings, "FILE_UPLOAD_TEMP_DIR", None))
    return meta


# --- instances ----------------------------------------------------------------------------

@handle_errors
def instance_list(request):
    """The project's servers made from a base VM (resumed or synthesized)."""
    conn = connection(request)
    base_ids = {i.id for i in _images_of_type(conn, model.BASE_DISK)}
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
    body = {"handoff_url": endpoint, "dest_token": token}
    if name:
        body["dest_vmname"] = name
    return _server_action(request, instance_id, {HANDOFF_ACTION: body}).get("handoff",
                                                                            endpoint)


@handle_errors
def handoff_residue(request, instance_id, image_name):
    """Store the instance's current state as VM overlay image ``image_name`` in this cloud's
    Glance (``cloudlet-handoff`` to ``file://NAME``); return the image id. The instance keeps
    running."""
    if not image_name or "/" in image_name:
        raise CloudletAPIError("%r is not an image name" % image_name)
    body = {HANDOFF_ACTION: {"handoff_url": "file://" + image_name}}
    return _server_action(request, instance_id, body)["handoff"]


def _server_action(request, instance_id, body):
    resp = connection(request).compute.post("/servers/%s/action" % instance_id, json=body,
                                            raise_exc=False)
    if resp.status_code >= 400:
        raise CloudletAPIError("%s (HTTP %d)" % (_nova_message(resp), resp.status_code))
    return resp.json()


def _nova_message(resp):
    """The message of a nova error body: ``{"conflictingRequest": {"message": ...}}``."""
    try:
        body = resp.json()
        return next(iter(body.values()))["message"]
    except Exception:  # noqa: BLE001 - not JSON: the text is the reason
        return resp.text.strip() or resp.reason


# --- flavors and networks -----------------------------------------------------------------

@handle_errors
def flavor_list(request):
    return [Flavor(f) for f in connection(request).compute.flavors(details=True)]


@handle_errors
def network_list(request):
    """``[(id, name)]`` of the networks the project can attach to."""
    conn = connection(request)
    return [(n.id, n.name) for n in conn.network.networks()]
