"""What the clients do, once: ``cloudlet-client`` and ``openstack cloudlet`` are thin over it.

Every function takes an openstacksdk ``Connection`` and speaks only public APIs: Glance for
the image model (``cloudlet_compute.imagemodel``), Nova for servers and the ``os-cloudlet``
actions (``doc/nova-integration.md``). Failures are ``CloudletError``s: one-line message,
exit code. Whatever a function creates (images, servers) is deleted again if it fails or is
interrupted (Ctrl-C) before it is complete.
"""

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time

import keystoneauth1.exceptions as ks_exc
import openstack
import openstack.exceptions as sdk_exc

from client.glance_import import import_base_package
from cloudlet_compute import bases, imagemodel as model
from cloudlet_compute.errors import (CloudletError, ConflictError, FetchError, FormatError,
                                     NotFoundError)
from cloudlet_compute.progress import NullProgress, Progress
from cloudlet_compute.read import overlayinfo

LOG = logging.getLogger(__name__)
DOWNLOAD_PIECE = 1 << 20
POLL_INTERVAL = 1.0
DEFAULT_TIMEOUT = 600
# How long images may stay unfinished once the server has no task any more.
TASK_GRACE = 30
# ``--network`` values that are not a network name or id (nova's own keywords).
NETWORK_KEYWORDS = ("auto", "none")


class AuthError(CloudletError):
    """Keystone refused the credentials, or no cloud is configured."""

    exit_code = 8


class ApiError(CloudletError):
    """An OpenStack service answered with an error not covered by a more specific class."""


class UsageError(CloudletError):
    """The options do not make a valid request (the exit code of argparse's errors)."""

    exit_code = 2


def _message(exc):
    """The service's own message from an SDK/keystoneauth exception, on one line."""
    for attr in ("details", "message"):
        text = getattr(exc, attr, None)
        if isinstance(text, str) and text.strip():
            return " ".join(text.split())
    return " ".join(str(exc).split()) or type(exc).__name__


def _status(exc):
    for attr in ("status_code", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    return None


def translate(exc):
    """Return the ``CloudletError`` for an SDK or keystoneauth exception (or None)."""
    if isinstance(exc, CloudletError):
        return exc
    cause = exc.__cause__ or exc.__context__
    if type(exc) is sdk_exc.SDKException and isinstance(cause, ks_exc.ClientException):
        return translate(cause)   # conn.authorize() wraps keystoneauth's exception
    if isinstance(exc, sdk_exc.ConfigException):
        return AuthError("cloud configuration: %s" % _message(exc))
    status = _status(exc)
    if isinstance(exc, (ks_exc.Unauthorized, ks_exc.MissingAuthPlugin,
                        ks_exc.AuthorizationFailure)) or status == 401:
        return AuthError("authentication failed: %s" % _message(exc))
    if isinstance(exc, ks_exc.ConnectFailure):
        return FetchError("cannot reach the cloud: %s" % _message(exc))
    if isinstance(exc, (sdk_exc.NotFoundException, sdk_exc.ResourceNotFound)) or status == 404:
        return NotFoundError(_message(exc))
    if isinstance(exc, sdk_exc.ConflictException) or status == 409:
        return ConflictError(_message(exc))
    if isinstance(exc, (sdk_exc.SDKException, ks_exc.ClientException)):
        return ApiError(_message(exc))
    return None


@contextlib.contextmanager
def api_errors():
    """Turn SDK and keystoneauth exceptions raised inside into ``CloudletError``s."""
    try:
        yield
    except (sdk_exc.SDKException, ks_exc.ClientException) as exc:
        raise translate(exc) from exc


def connect(cloud=None):
    """An authenticated openstacksdk connection: ``cloud`` from clouds.yaml, else
    ``OS_CLOUD`` / ``OS_*`` variables. Authenticates now, so bad credentials fail here."""
    with api_errors():
        conn = openstack.connect(cloud=cloud)
        conn.authorize()
    return conn


def _check_response(resp):
    """Raise the ``CloudletError`` for a failed raw API response, with the server's message."""
    if resp.status_code < 400:
        return resp
    try:
        body = resp.json()
        message = next(iter(body.values()))["message"] if isinstance(body, dict) else body
    except (ValueError, TypeError, KeyError, StopIteration):
        message = resp.text or resp.reason
    message = " ".join(str(message).split())
    cls = {401: AuthError, 404: NotFoundError, 409: ConflictError}.get(resp.status_code, ApiError)
    raise cls("%s (HTTP %d)" % (message, resp.status_code))


def server_action(conn, server_id, body):
    """POST a server action; return its JSON answer."""
    return _server_action(conn, server_id, body)[0]


def _server_action(conn, server_id, body):
    """POST a server action; return its JSON answer and the request id (which names the
    instance action the request recorded)."""
    with api_errors():
        resp = conn.compute.post("/servers/%s/action" % server_id, json=body, raise_exc=False)
    _check_response(resp)
    headers = getattr(resp, "headers", None) or {}
    request_id = headers.get("x-openstack-request-id") or headers.get("x-compute-request-id")
    return (resp.json() if resp.content else {}), request_id


# ---------------------------------------------------------------- lookups

def find_server(conn, ref):
    """The server named or identified by ``ref``."""
    with api_errors():
        server = conn.compute.find_server(ref, ignore_missing=True)
    if server is None:
        raise NotFoundError("no server %r" % ref)
    return server


def _images(conn, image_type, base_id=None):
    """The images of ``cloudlet_type`` ``image_type`` (and base id ``base_id``, if given)."""
    # NOTE: openstacksdk drops query parameters it does not know, so Glance cannot filter
    # on our properties; the filtering happens here.
    with api_errors():
        images = list(conn.image.images())
    return [i for i in images if (i.properties or {}).get(model.PROPERTY_TYPE) == image_type
            and (base_id is None or i.properties.get(model.PROPERTY_BASE_ID) == base_id)]


def find_image(conn, ref, image_type):
    """The image of ``cloudlet_type`` ``image_type`` whose id or name is ``ref``; for a base
    disk, ``ref`` may also be the base id (``base_sha256_uuid``)."""
    images = _images(conn, image_type)
    for key in ("id", "name"):
        matches = [i for i in images if getattr(i, key) == ref]
        if len(matches) > 1:
            raise ConflictError("%d images are named %r; use the image id" % (len(matches), ref))
        if matches:
            return matches[0]
    if image_type == model.BASE_DISK:
        matches = [i for i in _images(conn, image_type, ref) if i.status == "active"]
        if matches:
            return matches[0]
    what = "base VM" if image_type == model.BASE_DISK else "VM overlay"
    raise NotFoundError("no %s image %r" % (what, ref))


def pick_flavor(conn, image, flavor=None):
    """The flavor to boot base disk ``image`` with: ``flavor`` if given, else the smallest
    flavor with ``ram >= min_ram`` and ``disk >= min_disk`` (the original matched exactly)."""
    with api_errors():
        if flavor:
            found = conn.compute.find_flavor(flavor, ignore_missing=True)
            if found is None:
                raise NotFoundError("no flavor %r" % flavor)
            return found
        flavors = list(conn.compute.flavors())
    min_ram, min_disk = image.min_ram or 0, image.min_disk or 0
    if not min_ram:
        LOG.warning("image %s has no min_ram; the smallest flavor may not match its memory",
                    image.id)
    # NOTE: disk 0 means "as large as the image" and is refused to non-admins for image
    # boots, so it never fits.
    fits = [f for f in flavors if f.ram >= min_ram and f.disk and f.disk >= min_disk]
    if not fits:
        raise NotFoundError("no flavor has ram >= %d MiB and disk >= %d GiB for image %s; "
                            "pass --flavor" % (min_ram, min_disk, image.id))
    return min(fits, key=lambda f: (f.ram, f.disk, f.vcpus, f.name))


def _networks_arg(conn, network):
    if network in NETWORK_KEYWORDS:
        return network
    with api_errors():
        found = conn.network.find_network(network, ignore_missing=True)
    if found is None:
        raise NotFoundError("no network %r" % network)
    return [{"uuid": found.id}]


# ---------------------------------------------------------------- waiting

def _say(text):
    print(text, file=sys.stderr, flush=True)


def wait_server_active(conn, server_id, timeout=DEFAULT_TIMEOUT, report=_say):
    """Wait for ACTIVE, reporting status/task_state changes; raise with the fault on ERROR."""
    deadline, seen = time.monotonic() + timeout, None
    while True:
        with api_errors():
            server = conn.compute.get_server(server_id)
        state = (server.status, server.task_state)
        if state != seen:
            seen = state
            report("server %s: %s%s" % (server.name, server.status,
                                        " (%s)" % server.task_state if server.task_state else ""))
        if server.status == "ACTIVE" and not server.task_state:
            return server
        if server.status == "ERROR":
            fault = (server.fault or {}).get("message", "no fault recorded")
            raise ApiError("server %s went to ERROR: %s" % (server.name, " ".join(fault.split())))
        if time.monotonic() > deadline:
            raise ApiError("server %s is still %s after %d s" % (server.name, server.status,
                                                                timeout))
        time.sleep(POLL_INTERVAL)


def wait_task(conn, server_id, image_ids, timeout=DEFAULT_TIMEOUT, report=_say):
    """Wait until the server's cloudlet task is over and every image is active."""
    deadline, seen, idle_since = time.monotonic() + timeout, None, None
    while True:
        with api_errors():
            server = conn.compute.get_server(server_id)
            images = {i: conn.image.find_image(i, ignore_missing=True) for i in image_ids}
        if server.task_state != seen:
            seen = server.task_state
            report("server %s: %s" % (server.name, seen or "no task"))
        statuses = {i: image.status if image else "deleted" for i, image in images.items()}
        if all(s == "active" for s in statuses.values()) and not server.task_state:
            return server
        # The API deletes the records when the task fails; an idle server whose images
        # stay unfinished also means the task is gone.
        failed = [i for i, s in statuses.items() if s in ("killed", "deleted", "deactivated")]
        idle_since = (idle_since or time.monotonic()) if not server.task_state else None
        if failed or (idle_since and time.monotonic() - idle_since > TASK_GRACE):
            image_id = (failed or list(statuses))[0]
            raise ApiError("the task on server %s failed: image %s is %s (see `openstack "
                           "server event list %s`)" % (server.name, image_id,
                                                       statuses[image_id], server.id))
        if time.monotonic() > deadline:
            raise ApiError("server %s: task %s not done after %d s"
                           % (server.name, server.task_state, timeout))
        time.sleep(POLL_INTERVAL)


def _delete_images(conn, image_ids):
    for image_id in image_ids:
        try:
            conn.image.delete_image(image_id, ignore_missing=True)
            LOG.info("deleted image %s", image_id)
        except Exception as exc:  # noqa: BLE001 - best effort: the first error matters more
            LOG.warning("could not delete image %s: %s", image_id, exc)


def _delete_server(conn, server_id):
    try:
        conn.compute.delete_server(server_id, ignore_missing=True)
        LOG.info("deleted server %s", server_id)
    except Exception as exc:  # noqa: BLE001
        LOG.warning("could not delete server %s: %s", server_id, exc)


# ---------------------------------------------------------------- base VMs

def _base_row(image):
    props = image.properties or {}
    return {"id": image.id, "name": image.name, "base_id": props.get(model.PROPERTY_BASE_ID),
            "status": image.status, "size": image.size, "min_ram": image.min_ram,
            "min_disk": image.min_disk}


def list_bases(conn):
    """The base VMs (their disk images) visible to the user."""
    return [_base_row(i) for i in _images(conn, model.BASE_DISK)]


def import_base(conn, package, name, visibility="private", progress=None):
    """Upload base package ``package`` as four linked images; return ``{type: image id}``."""
    if not os.path.isfile(package):
        raise NotFoundError("base package %s does not exist" % package)
    progress = progress or NullProgress()
    with api_errors():
        ids = import_base_package(conn, package, name=name, visibility=visibility,
                                  progress=progress)
    progress.finish()
    return ids


def _download(conn, image, path, progress):
    """Stream ``image``'s data into ``path`` (sparse), checking Glance's hash."""
    algo = image.hash_algo or "md5"
    expected = image.hash_value if image.hash_algo else image.checksum
    digest = hashlib.new(algo)
    zero = bytes(DOWNLOAD_PIECE)
    with api_errors():
        resp = conn.image.download_image(image, stream=True)
    try:
        with open(path, "wb") as out:
            for piece in resp.iter_content(DOWNLOAD_PIECE):
                digest.update(piece)
                if piece == zero[:len(piece)]:
                    out.seek(len(piece), os.SEEK_CUR)
                else:
                    out.write(piece)
                progress.update(len(piece))
            out.truncate()
    finally:
        resp.close()
    if expected and digest.hexdigest() != expected:
        raise FormatError("image %s downloaded with %s %s, Glance says %s"
                          % (image.id, algo, digest.hexdigest(), expected))


def export_base(conn, ref, package, progress_factory=NullProgress):
    """Write the base VM of base disk image ``ref`` as a base package (``cloudlet base
    export`` format) at ``package``. The disk and memory images are downloaded into a
    private base store, which checks them against the base id, and exported from there."""
    disk = find_image(conn, ref, model.BASE_DISK)
    props = disk.properties or {}
    linked = {}
    for image_type in model.LINKED_TYPES:
        with api_errors():
            image = conn.image.find_image(props.get(image_type) or "", ignore_missing=True)
        if image is None or image.status != "active":
            raise NotFoundError("base VM image %s links %s %s, which is missing or not active"
                                % (disk.id, image_type, props.get(image_type)))
        linked[image_type] = image
    scratch = tempfile.mkdtemp(prefix=".cloudlet-export-",
                               dir=os.path.dirname(os.path.abspath(package)))
    try:
        # NOTE: the hash lists are not part of a package (import recomputes them), so only
        # the disk and memory images are downloaded; the store recomputes and checks.
        files = {}
        for image in (disk, linked[model.BASE_MEMORY]):
            path = os.path.join(scratch, model.BASE_FILES[image.properties[model.PROPERTY_TYPE]])
            progress = progress_factory("downloading", image.size)
            _download(conn, image, path, progress)
            progress.finish()
            files[image.properties[model.PROPERTY_TYPE]] = path
        store = bases.BaseStore(os.path.join(scratch, "store"))
        name = disk.name[:-len(model.SUFFIXES[model.BASE_DISK])] \
            if disk.name.endswith(model.SUFFIXES[model.BASE_DISK]) else disk.name
        base = store.add(files[model.BASE_DISK], files[model.BASE_MEMORY], name)
        if base.id != props.get(model.PROPERTY_BASE_ID):
            raise FormatError("image %s holds base VM %s, its %s says %s"
                              % (disk.id, base.id, model.PROPERTY_BASE_ID,
                                 props.get(model.PROPERTY_BASE_ID)))
        progress = progress_factory("exporting", base.disk_size + base.memory_size)
        store.export(base.id, package, progress)
        progress.finish()
        return {"file": package, "base_id": base.id, "name": base.name}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _boot(conn, name, image, flavor, network, metadata, wait, timeout):
    """POST /servers from a base disk image; delete the server if this does not finish."""
    networks = _networks_arg(conn, network)
    server = None
    try:
        with api_errors():
            server = conn.compute.create_server(
                name=name, image_id=image.id, flavor_id=flavor.id, networks=networks,
                **({"metadata": metadata} if metadata else {}))
        if wait:
            server = wait_server_active(conn, server.id, timeout)
        return {"id": server.id, "name": name, "status": server.status, "image": image.id,
                "flavor": flavor.name}
    except BaseException:
        if server is not None:
            _delete_server(conn, server.id)
        raise


def resume_base(conn, ref, name, flavor=None, network="auto", wait=False,
                timeout=DEFAULT_TIMEOUT):
    """A new server from base VM ``ref``: its memory is restored, it is not booted."""
    image = find_image(conn, ref, model.BASE_DISK)
    return _boot(conn, name, image, pick_flavor(conn, image, flavor), network, None, wait,
                 timeout)


def create_base(conn, server_ref, name, wait=False, timeout=DEFAULT_TIMEOUT):
    """Snapshot running server ``server_ref`` into a base VM (action ``cloudlet-base``)."""
    server = find_server(conn, server_ref)
    answer = server_action(conn, server.id, {"cloudlet-base": {"name": name}})
    if wait:
        try:
            wait_task(conn, server.id, list(answer.values()), timeout)
        except BaseException:
            _delete_images(conn, answer.values())
            raise
    return answer


# ---------------------------------------------------------------- VM overlays

def _overlay_row(image):
    props = image.properties or {}
    return {"id": image.id, "name": image.name, "status": image.status, "size": image.size,
            "base_id": props.get(model.PROPERTY_BASE_ID),
            "instance_uuid": props.get("instance_uuid")}


def list_overlays(conn):
    """The VM overlay images visible to the user."""
    return [_overlay_row(i) for i in _images(conn, model.OVERLAY)]


def create_overlay(conn, server_ref, name, wait=False, timeout=DEFAULT_TIMEOUT):
    """Build the VM overlay of server ``server_ref`` (action ``cloudlet-overlay-finish``)."""
    server = find_server(conn, server_ref)
    answer = server_action(conn, server.id, {"cloudlet-overlay-finish": {"overlay-name": name}})
    if wait:
        try:
            wait_task(conn, server.id, [answer["overlay-id"]], timeout)
        except BaseException:
            _delete_images(conn, [answer["overlay-id"]])
            raise
        with api_errors():
            answer["size"] = conn.image.get_image(answer["overlay-id"]).size
    return answer


def download(conn, ref, path, progress_factory=NullProgress):
    """Save VM overlay image ``ref`` as ``path`` (through ``path.part``; checked)."""
    image = find_image(conn, ref, model.OVERLAY)
    if image.status != "active":
        raise ConflictError("VM overlay image %s is %s, not active" % (image.id, image.status))
    part = path + ".part"
    try:
        progress = progress_factory("downloading", image.size)
        _download(conn, image, part, progress)
        progress.finish()
        os.replace(part, path)
    except BaseException:
        if os.path.exists(part):
            os.unlink(part)
        raise
    return {"id": image.id, "file": path, "size": os.path.getsize(path)}


def synthesis(conn, url, name, flavor=None, network="auto", wait=False,
              timeout=DEFAULT_TIMEOUT, workdir=None):
    """VM synthesis: a new server from the overlay at ``url`` and the base it needs.

    Only the overlay's meta is read here (one Range request for its tail); nova-compute
    fetches the rest. The base disk image is the one whose ``base_sha256_uuid`` the meta
    names."""
    scratch = tempfile.mkdtemp(prefix="cloudlet-synthesis-", dir=workdir)
    try:
        meta, _size = overlayinfo.info(url, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base_id = meta["base_vm_sha256"]
    images = [i for i in _images(conn, model.BASE_DISK, base_id) if i.status == "active"]
    if not images:
        raise NotFoundError("the overlay at %s needs base VM %s, which is not in Glance "
                            "(import it with import-base)" % (url, base_id))
    image = images[0]
    return _boot(conn, name, image, pick_flavor(conn, image, flavor), network,
                 {model.METADATA_OVERLAY_URL: url}, wait, timeout)


# ---------------------------------------------------------------- VM handoff

HANDOFF_ACTION = "cloudlet-handoff"
# Metadata key of the destination server: the source server's id.
HANDOFF_FROM = "cloudlet_handoff_from"
# The first compute microversion whose instance action events carry ``details``.
EVENT_DETAILS_MICROVERSION = "2.84"
DEST_DOMAIN = "Default"


def _destination_error(exc):
    """``exc`` (a ``CloudletError``) of the same class, its message saying it is about the
    destination cloud."""
    return type(exc)("destination cloud: %s" % exc)


def connect_destination(cloud=None, auth_url=None, username=None, password=None,
                        project=None, project_domain=None, user_domain=None):
    """An authenticated connection to the destination cloud of a handoff: ``cloud`` from
    clouds.yaml, or Keystone v3 password credentials (``auth_url``, ``username``,
    ``password``, ``project``; domains ``Default`` unless given). Never from ``OS_*``
    variables, which describe the source cloud. Authenticates now."""
    explicit = {"--dest-username": username, "--dest-password": password,
                "--dest-project": project, "--dest-project-domain": project_domain,
                "--dest-user-domain": user_domain}
    if cloud and auth_url:
        raise UsageError("give the destination as --dest-cloud or as --dest-auth-url, "
                         "not both")
    if cloud:
        # NOTE: not the password, which may come from $CLOUDLET_DEST_PASSWORD.
        stray = [opt for opt, value in explicit.items()
                 if value and opt != "--dest-password"]
        if stray:
            raise UsageError("%s go with --dest-auth-url, not with --dest-cloud"
                             % ", ".join(stray))
    elif auth_url:
        missing = [opt for opt in ("--dest-username", "--dest-password", "--dest-project")
                   if not explicit[opt]]
        if missing:
            raise UsageError("--dest-auth-url needs %s" % ", ".join(missing))
    else:
        raise UsageError("the destination cloud is missing: give --dest-cloud, or "
                         "--dest-auth-url with --dest-username, --dest-password and "
                         "--dest-project")
    try:
        with api_errors():
            if cloud:
                dest = openstack.connect(cloud=cloud)
            else:
                dest = openstack.connect(
                    load_yaml_config=False, load_envvars=False, auth_type="password",
                    interface="public", identity_api_version="3",
                    auth={"auth_url": auth_url, "username": username, "password": password,
                          "project_name": project,
                          "project_domain_name": project_domain or DEST_DOMAIN,
                          "user_domain_name": user_domain or DEST_DOMAIN})
            dest.authorize()
    except CloudletError as exc:
        raise _destination_error(exc) from exc
    return dest


def destination_endpoint(dest_conn):
    """``(compute endpoint, token)`` of the destination cloud: its public compute endpoint
    as its Keystone catalog lists it, and a project-scoped token of its user."""
    try:
        with api_errors():
            token = dest_conn.auth_token
            url = dest_conn.endpoint_for("compute", interface="public")
    except CloudletError as exc:
        raise _destination_error(exc) from exc
    if not token:
        raise AuthError("destination cloud: no token (is the user scoped to a project?)")
    if not url:
        raise NotFoundError("destination cloud: its catalog lists no public compute "
                            "endpoint")
    return url, token


def handoff_failure(conn, server_id, request_id=None):
    """The one-line reason the handoff of ``server_id`` failed, from its instance actions
    (the ``cloudlet-handoff`` action of request ``request_id``, else the latest one: the
    details of its event whose result is ``Error``); None if it records no error."""
    base = "/servers/%s/os-instance-actions" % server_id
    with api_errors():
        resp = conn.compute.get(base, microversion=EVENT_DETAILS_MICROVERSION,
                                raise_exc=False)
    actions = [a for a in _check_response(resp).json().get("instanceActions", [])
               if a.get("action") == HANDOFF_ACTION]
    ours = [a for a in actions if request_id and a.get("request_id") == request_id]
    if not ours and actions:
        # Nova lists the newest first.
        ours = [max(actions, key=lambda a: a.get("start_time") or "")]
    if not ours:
        return None
    with api_errors():
        resp = conn.compute.get("%s/%s" % (base, ours[0]["request_id"]),
                                microversion=EVENT_DETAILS_MICROVERSION, raise_exc=False)
    action = _check_response(resp).json().get("instanceAction", {})
    errors = [e for e in action.get("events") or [] if e.get("result") == "Error"]
    if not errors:
        return None
    # Event details are for admins by default; the source also leaves the reason in the
    # server's metadata.
    with api_errors():
        resp = conn.compute.get("/servers/%s/metadata/%s" % (server_id, model.METADATA_HANDOFF_ERROR),
                                raise_exc=False)
    recorded = resp.json().get("meta", {}).get(model.METADATA_HANDOFF_ERROR) \
        if resp.status_code == 200 else None
    reason = errors[-1].get("details") or recorded or action.get("message") or \
        "%s ended in Error" % errors[-1].get("event")
    return " ".join(str(reason).split())


def wait_handoff(conn, server, request_id=None, timeout=DEFAULT_TIMEOUT,
                 progress_factory=NullProgress, report=_say):
    """Wait until ``server`` has left this cloud (it is deleted once the destination has it),
    showing its ``progress``; raise with the reason if it stays (ACTIVE again, no task)."""
    deadline, seen, idle_since, bar = time.monotonic() + timeout, (), None, None
    try:
        while True:
            try:
                with api_errors():
                    current = conn.compute.get_server(server.id)
            except NotFoundError:
                current = None
            if current is None or current.status == "DELETED":
                if bar is not None and bar.done < 100:
                    bar.update(100 - bar.done)
                return
            if current.task_state != seen:
                seen = current.task_state
                report("server %s: %s" % (server.name, seen or "no task"))
            if current.task_state:
                idle_since = None
                bar = bar or progress_factory("handing off", 100, "%")
                step = min(current.progress or 0, 100) - bar.done
                if step > 0:
                    bar.update(step)
            elif current.status == "ERROR":
                fault = (current.fault or {}).get("message", "no fault recorded")
                raise ApiError("handoff of server %s failed: it went to ERROR: %s"
                               % (server.name, " ".join(fault.split())))
            else:
                # Back to ACTIVE without a task: the handoff failed; its instance action
                # says why (its event may be written just after the task is reset).
                reason = handoff_failure(conn, server.id, request_id)
                if reason:
                    raise ApiError("handoff of server %s failed: %s" % (server.name, reason))
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > TASK_GRACE:
                    raise ApiError("handoff of server %s ended, but the server is still here "
                                   "(see `openstack server event list %s`)"
                                   % (server.name, server.id))
            if time.monotonic() > deadline:
                raise ApiError("server %s: handoff not done after %d s (it goes on; see "
                               "`openstack server show %s`)" % (server.name, timeout,
                                                               server.id))
            time.sleep(POLL_INTERVAL)
    finally:
        if bar is not None:
            bar.finish()


def find_handoff_server(dest_conn, source_id, name):
    """The destination's server ``name`` that was handed off from server ``source_id``."""
    try:
        with api_errors():
            servers = list(dest_conn.compute.servers(details=True))
    except CloudletError as exc:
        raise _destination_error(exc) from exc
    found = [s for s in servers if s.name == name
             and (s.metadata or {}).get(HANDOFF_FROM) == source_id]
    if not found:
        raise NotFoundError("server %s left this cloud, but the destination has no server "
                            "%r with %s=%s" % (source_id, name, HANDOFF_FROM, source_id))
    return found[0]


def handoff(conn, server_ref, dest_conn=None, dest_vmname=None, residue=None, wait=False,
            timeout=DEFAULT_TIMEOUT, progress_factory=NullProgress, report=_say):
    """VM handoff (action ``cloudlet-handoff``) of running server ``server_ref``.

    To another cloud (``dest_conn``: a connection to it, see ``connect_destination``): the
    server there is named ``dest_vmname`` (default: the same name). Without ``wait``, the
    answer is that the handoff started; with it, the destination server (id, name, status)
    once the source server is gone, or the reason the handoff failed. The handoff itself is
    not undone by Ctrl-C: it goes on in the clouds.

    With ``residue`` (a name) instead, the server's current state becomes VM overlay image
    ``residue`` in this cloud's Glance and the server keeps running; with ``wait``, until
    the image is active (deleted again if that fails or is interrupted)."""
    if (dest_conn is None) == (residue is None):
        raise UsageError("handoff needs a destination cloud or --residue NAME "
                         "(one of them)")
    if residue is not None:
        if dest_vmname:
            raise UsageError("--dest-vmname goes with a destination cloud, not with "
                             "--residue")
        if not residue.strip() or "/" in residue:
            raise UsageError("--residue needs an image name without '/' (got %r)" % residue)
    server = find_server(conn, server_ref)
    if residue is not None:
        return _handoff_residue(conn, server, residue, wait, timeout, report)
    url, token = destination_endpoint(dest_conn)
    name = dest_vmname or server.name
    answer, request_id = _server_action(conn, server.id, {HANDOFF_ACTION: {
        "handoff_url": url, "dest_token": token, "dest_vmname": name}})
    if not wait:
        return {"server": server.id, "handoff": answer.get("handoff", url),
                "dest_vmname": name}
    started = time.monotonic()
    wait_handoff(conn, server, request_id, timeout, progress_factory, report)
    dest = find_handoff_server(dest_conn, server.id, name)
    if dest.status != "ACTIVE":
        remaining = max(timeout - (time.monotonic() - started), POLL_INTERVAL)
        try:
            dest = wait_server_active(dest_conn, dest.id, remaining, report)
        except CloudletError as exc:
            raise _destination_error(exc) from exc
    return {"id": dest.id, "name": dest.name, "status": dest.status,
            HANDOFF_FROM: server.id}


def _handoff_residue(conn, server, name, wait, timeout, report):
    answer = server_action(conn, server.id, {HANDOFF_ACTION: {"handoff_url": "file://" + name}})
    image_id = answer["handoff"]
    result = {"image_id": image_id, "name": name}
    if wait:
        try:
            wait_task(conn, server.id, [image_id], timeout, report)
        except BaseException:
            _delete_images(conn, [image_id])
            raise
        with api_errors():
            image = conn.image.get_image(image_id)
        result.update(status=image.status, size=image.size)
    return result


# ---------------------------------------------------------------- the rest



def list_extensions(conn, name=None):
    """Nova's API extensions (``GET /extensions``), or the one whose alias is ``name``."""
    with api_errors():
        resp = conn.compute.get("/extensions" + ("/%s" % name if name else ""),
                                raise_exc=False)
    body = _check_response(resp).json()
    items = [body["extension"]] if name else body["extensions"]
    return [{"alias": e.get("alias"), "name": e.get("name"),
             "description": e.get("description"), "updated": e.get("updated")}
            for e in items]


def progress_bar(label, total, unit="B"):
    """A progress bar on stderr (drawn on a terminal only)."""
    return Progress(label, total, unit)
