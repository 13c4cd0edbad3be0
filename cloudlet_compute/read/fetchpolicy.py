"""Which hosts and ports an overlay URL may name, and how long its download may take, for
services that fetch on a user's behalf.

Modelled on Glance's web-download import filtering: a URL's host is resolved and *every*
address it resolves to is checked before anything connects; the peer of each connection is
checked again once connected (a name that resolves elsewhere the second time gets nowhere);
redirects are not followed. Refused by default: loopback, link-local, unspecified, multicast
and reserved addresses, this host's own addresses, and ports other than 80 and 443. An
operator's ``allowed_hosts`` (names, addresses, CIDRs) restricts URLs to those and lifts the
default refusal for what it names; ``disallowed_hosts`` always wins. A refusal says only
``REFUSED``: nothing about which rule, so faults do not map the management network.
``time_limit`` bounds a whole download (every request, resume and wait of one source).
"""

import ipaddress
import socket

from cloudlet_compute.errors import FetchError

REFUSED = "overlay URL not allowed by this cloud's overlay fetch policy"
DEFAULT_PORTS = (80, 443)


class RefusedURL(FetchError):
    """The URL names a host, address or port the fetch policy refuses."""

    def __init__(self):
        super().__init__(REFUSED)


def _parse_entry(entry):
    """A host list entry as ``("net", ip_network)`` or ``("name", lowercase name)``."""
    entry = entry.strip()
    try:
        return "net", ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return "name", entry.lower().rstrip(".")


def _host_addresses():
    """Every address of this host's interfaces."""
    import psutil
    found = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                found.add(ipaddress.ip_address(addr.address.split("%")[0]))
    return found


class FetchPolicy:
    """Checks overlay URLs (``check``) and connected peers (``check_peer``); ``time_limit``
    (seconds, None for none) is what ``fetch`` gives one overlay's download."""

    def __init__(self, allowed_hosts=(), disallowed_hosts=(), allowed_ports=DEFAULT_PORTS,
                 resolve=None, host_addresses=None, time_limit=None):
        self.allowed = [_parse_entry(h) for h in allowed_hosts if h.strip()]
        self.disallowed = [_parse_entry(h) for h in disallowed_hosts if h.strip()]
        self.ports = frozenset(int(p) for p in allowed_ports)
        self._resolve = resolve or _resolve
        self.time_limit = time_limit or None
        self._host_addresses = host_addresses

    def check(self, url_parts):
        """Refuse (``RefusedURL``) unless the URL's host, all its addresses and its port are
        allowed. ``url_parts`` is a ``urllib.parse.urlsplit`` result of an http(s) URL."""
        name = (url_parts.hostname or "").lower().rstrip(".")
        try:
            port = url_parts.port or (443 if url_parts.scheme == "https" else 80)
        except ValueError:
            raise RefusedURL() from None
        if not name or (self.ports and port not in self.ports):
            raise RefusedURL()
        try:
            addresses = self._resolve(name, port)
        except OSError:
            raise FetchError("overlay URL host %s does not resolve" % name) from None
        if not addresses:
            raise RefusedURL()
        for address in addresses:
            self._check_address(name, address)

    def check_peer(self, name, address):
        """Refuse a connection whose peer ``address`` the policy does not allow."""
        self._check_address((name or "").lower().rstrip("."), ipaddress.ip_address(address))

    def _check_address(self, name, address):
        if _matches(self.disallowed, name, address):
            raise RefusedURL()
        if self.allowed:
            if not _matches(self.allowed, name, address):
                raise RefusedURL()
            return
        if _special(address) or address in self._own_addresses():
            raise RefusedURL()

    def _own_addresses(self):
        if self._host_addresses is None:
            self._host_addresses = _host_addresses()
        return self._host_addresses


def _matches(entries, name, address):
    for kind, value in entries:
        if kind == "name" and value == name:
            return True
        if kind == "net" and address.version == value.version and address in value:
            return True
    return False


def _special(address):
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (address.is_loopback or address.is_link_local or address.is_unspecified
            or address.is_multicast or address.is_reserved)


def _resolve(name, port):
    infos = socket.getaddrinfo(name, port, proto=socket.IPPROTO_TCP)
    return {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
