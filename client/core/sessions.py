"""Connections to a cloud, and the raw server-action call.

``connect`` is the command lines' connection (clouds.yaml or ``OS_*``); ``token_connection``
is one for a token that is already scoped and endpoints that are already known (the Horizon
panel passes what ``openstack_dashboard.api`` uses), with no request to Keystone.
"""

import openstack
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint

from client.core.errors import api_errors, check_response


def connect(cloud=None):
    """An authenticated openstacksdk connection: ``cloud`` from clouds.yaml, else
    ``OS_CLOUD`` / ``OS_*`` variables. Authenticates now, so bad credentials fail here."""
    with api_errors():
        conn = openstack.connect(cloud=cloud)
        conn.authorize()
    return conn


def token_connection(token, endpoints, verify=True, region_name=None, original_ip=None,
                     app_name=None):
    """An openstacksdk connection that sends ``token`` to the endpoints of ``endpoints``
    (``{service type: URL or None}``). A service whose URL is None is disabled: using it
    raises ``ServiceDisabledException`` with the reason. Other services are not usable."""
    sess = ks_session.Session(auth=token_endpoint.Token(endpoint=None, token=token),
                              verify=verify, original_ip=original_ip)
    config = {}
    for service_type, url in endpoints.items():
        key = service_type.replace("-", "_")
        if url:
            config[key + "_endpoint_override"] = url
        else:
            config["has_" + key] = False
            config[key + "_disabled_reason"] = "The catalog lists no %s endpoint." % service_type
    return openstack.connection.Connection(session=sess, region_name=region_name,
                                           app_name=app_name, **config)


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
