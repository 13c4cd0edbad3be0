"""The destination cloud of a VM handoff, seen through its compute API with the user's token.

Used by nova-api (checks before anything is created: the token works, the destination
holds the same base VM, a flavor fits) and by nova-compute (create the destination
server, watch it, delete it after a failure). Only the destination's public compute
endpoint and a token of the destination's user are needed: images are listed through
nova's image API (microversion 2.1, the last that has it), which shows their properties.
"""

from urllib import parse

import requests
from oslo_log import log as logging

from cloudlet_compute.nova import glance

LOG = logging.getLogger(__name__)
TIMEOUT = 30
MICROVERSION = '2.1'


class DestinationError(Exception):
    """A handoff destination problem; ``status`` is the HTTP status the API answers."""

    def __init__(self, message, status=409):
        super().__init__(message)
        self.status = status


def check_url(url):
    """Return ``url`` if it is an http(s) compute endpoint URL without credentials."""
    parts = parse.urlsplit(url or '')
    if parts.scheme not in ('http', 'https') or not parts.hostname or \
            parts.username or parts.password or parts.query or parts.fragment:
        raise DestinationError("handoff_url %r is not an http(s) URL of the destination's "
                               "compute endpoint" % url, status=400)
    return url.rstrip('/')


class Destination:
    """The destination's compute API at ``url``, as the owner of ``token``."""

    def __init__(self, url, token):
        self.url = check_url(url)
        self._headers = {'X-Auth-Token': token, 'Accept': 'application/json',
                         'OpenStack-API-Version': 'compute %s' % MICROVERSION,
                         'X-OpenStack-Nova-API-Version': MICROVERSION}

    def _call(self, method, path, body=None, ok=(200,)):
        try:
            resp = requests.request(method, self.url + path, json=body, headers=self._headers,
                                    timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise DestinationError("destination %s is unreachable: %s"
                                   % (self.url, type(exc).__name__), status=400) from None
        if resp.status_code in (401, 403):
            raise DestinationError("dest_token was rejected by the destination %s (HTTP %d)"
                                   % (self.url, resp.status_code), status=400)
        if resp.status_code not in ok:
            raise DestinationError("destination %s answered %s %s with HTTP %d: %s"
                                   % (self.url, method, path, resp.status_code,
                                      _message(resp)), status=409)
        try:
            return resp.json() if resp.content else {}
        except ValueError:
            raise DestinationError("destination %s answered %s %s with something that is not "
                                   "JSON" % (self.url, method, path), status=409) from None

    def find_base(self, base_id):
        """The id of the destination's active base disk image of base VM ``base_id``."""
        for image in self._call('GET', '/images/detail').get('images', []):
            meta = image.get('metadata') or {}
            if image.get('status') == 'ACTIVE' and \
                    meta.get(glance.PROPERTY_TYPE) == glance.BASE_DISK and \
                    meta.get(glance.PROPERTY_BASE_ID) == base_id:
                return image['id']
        raise DestinationError("the destination %s has no base VM %s: import it there first"
                               % (self.url, base_id))

    def pick_flavor(self, flavor):
        """The destination flavor for a server of ``flavor`` (nova Flavor): the same name
        with the same size, else the smallest one with the same RAM that fits."""
        fits = []
        for f in self._call('GET', '/flavors/detail').get('flavors', []):
            if f['ram'] == flavor.memory_mb and f['vcpus'] >= flavor.vcpus and \
                    f['disk'] >= flavor.root_gb:
                if f['name'] == flavor.name:
                    return f['id']
                fits.append((f['vcpus'], f['disk'], f['id']))
        if not fits:
            raise DestinationError("the destination %s has no flavor with %d MiB of RAM and at "
                                   "least %d vCPUs and %d GB of disk"
                                   % (self.url, flavor.memory_mb, flavor.vcpus, flavor.root_gb))
        return min(fits)[2]

    def create_server(self, name, image_id, flavor_id, metadata):
        """Create the destination server; return its id."""
        body = {'server': {'name': name, 'imageRef': image_id, 'flavorRef': flavor_id,
                           'metadata': metadata}}
        return self._call('POST', '/servers', body, ok=(202,))['server']['id']

    def server(self, server_id):
        """The destination server's record, or None once it is gone."""
        try:
            return self._call('GET', '/servers/%s' % server_id)['server']
        except DestinationError as exc:
            if 'HTTP 404' in str(exc):
                return None
            raise

    def delete_server(self, server_id):
        """Delete the destination server (best effort: logged, not raised)."""
        try:
            self._call('DELETE', '/servers/%s' % server_id, ok=(204, 404))
        except DestinationError as exc:
            LOG.warning("could not delete handoff destination server %s: %s", server_id, exc)


def _message(resp):
    try:
        body = resp.json()
        return next(iter(body.values())).get('message', '')[:300]
    except Exception:
        return resp.text[:300]
