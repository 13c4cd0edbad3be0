"""VM handoff (server action ``cloudlet-handoff``): a running server moves to another
OpenStack++ cloud, or its current state becomes a VM overlay image here (the residue).

The destination is a second connection (``connect_destination``); the source is given its
public compute endpoint and a token there. Waiting follows the source server until it is
gone, then finds the server the destination made."""

import time

import openstack

from client.core import waiting
from client.core.errors import ApiError, AuthError, UsageError, api_errors, check_response
from client.core.lookups import find_server
from client.core.sessions import server_action, server_action_request
from client.core.waiting import DEFAULT_TIMEOUT
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import CloudletError, NotFoundError
from cloudlet_compute.progress import NullProgress

HANDOFF_ACTION = "cloudlet-handoff"
# Metadata key of the destination server: the source server's id.
HANDOFF_FROM = model.METADATA_HANDOFF_FROM
# The first compute microversion whose instance action events carry ``details``.
EVENT_DETAILS_MICROVERSION = "2.84"
DEST_DOMAIN = "Default"


def handoff_body(url, token, dest_vmname=None):
    """The ``cloudlet-handoff`` action to the cloud whose compute endpoint is ``url``
    (``token``: valid there); without ``dest_vmname`` nova keeps the name."""
    body = {"handoff_url": url, "dest_token": token}
    if dest_vmname:
        body["dest_vmname"] = dest_vmname
    return {HANDOFF_ACTION: body}


def residue_name_ok(name):
    """Whether ``name`` can name a residue image (``file://NAME``)."""
    return bool(name and name.strip()) and "/" not in name


def residue_body(name):
    """The ``cloudlet-handoff`` action that stores the server's state as overlay image
    ``name`` here; its answer's ``handoff`` is the image id."""
    return {HANDOFF_ACTION: {"handoff_url": "file://" + name}}


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
    actions = [a for a in check_response(resp).json().get("instanceActions", [])
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
    action = check_response(resp).json().get("instanceAction", {})
    errors = [e for e in action.get("events") or [] if e.get("result") == "Error"]
    if not errors:
        return None
    # Event details are for admins by default; the source also leaves the reason in the
    # server's metadata.
    reason = errors[-1].get("details") or waiting.recorded_failure(conn, server_id) or \
        action.get("message") or \
        "%s ended in Error" % errors[-1].get("event")
    return " ".join(str(reason).split())


def wait_handoff(conn, server, request_id=None, timeout=DEFAULT_TIMEOUT,
                 progress_factory=NullProgress, report=waiting.say):
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
                if time.monotonic() - idle_since > waiting.TASK_GRACE:
                    raise ApiError("handoff of server %s ended, but the server is still here "
                                   "(see `openstack server event list %s`)"
                                   % (server.name, server.id))
            if time.monotonic() > deadline:
                raise ApiError("server %s: handoff not done after %d s (it goes on; see "
                               "`openstack server show %s`)" % (server.name, timeout,
                                                               server.id))
            time.sleep(waiting.POLL_INTERVAL)
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
            timeout=DEFAULT_TIMEOUT, progress_factory=NullProgress, report=waiting.say):
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
        if not residue_name_ok(residue):
            raise UsageError("--residue needs an image name without '/' (got %r)" % residue)
    server = find_server(conn, server_ref)
    if residue is not None:
        return _handoff_residue(conn, server, residue, wait, timeout, report)
    url, token = destination_endpoint(dest_conn)
    name = dest_vmname or server.name
    answer, request_id = server_action_request(conn, server.id,
                                               handoff_body(url, token, name))
    if not wait:
        return {"server": server.id, "handoff": answer.get("handoff", url),
                "dest_vmname": name}
    started = time.monotonic()
    wait_handoff(conn, server, request_id, timeout, progress_factory, report)
    dest = find_handoff_server(dest_conn, server.id, name)
    if dest.status != "ACTIVE":
        remaining = max(timeout - (time.monotonic() - started), waiting.POLL_INTERVAL)
        try:
            dest = waiting.wait_server_active(dest_conn, dest.id, remaining, report)
        except CloudletError as exc:
            raise _destination_error(exc) from exc
    return {"id": dest.id, "name": dest.name, "status": dest.status,
            HANDOFF_FROM: server.id}


def _handoff_residue(conn, server, name, wait, timeout, report):
    image_id = server_action(conn, server.id, residue_body(name))["handoff"]
    result = {"image_id": image_id, "name": name}
    if wait:
        try:
            waiting.wait_task(conn, server.id, [image_id], timeout, report)
        except BaseException:
            waiting.delete_images(conn, [image_id])
            raise
        with api_errors():
            image = conn.image.get_image(image_id)
        result.update(status=image.status, size=image.size)
    return result
