"""The command lines' connection to a cloud (clouds.yaml or ``OS_*``), and the raw
server-action call. (The Horizon panel uses Horizon's own clients instead.)"""

import openstack

from client.core.errors import api_errors, check_response


def connect(cloud=None):
    """An authenticated openstacksdk connection: ``cloud`` from clouds.yaml, else
    ``OS_CLOUD`` / ``OS_*`` variables. Authenticates now, so bad credentials fail here."""
    with api_errors():
        conn = openstack.connect(cloud=cloud)
        conn.authorize()
    return conn


def server_action(conn, server_id, body):
    """POST a server action; return its JSON answer."""
    return server_action_request(conn, server_id, body)[0]


def server_action_request(conn, server_id, body):
    """POST a server action; return its JSON answer and the request id (which names the
    instance action the request recorded)."""
    with api_errors():
        resp = conn.compute.post("/servers/%s/action" % server_id, json=body, raise_exc=False)
    check_response(resp)
    headers = getattr(resp, "headers", None) or {}
    request_id = headers.get("x-openstack-request-id") or headers.get("x-compute-request-id")
    return (resp.json() if resp.content else {}), request_id
