"""The overlay fetch policy (issue 16): refused hosts and ports, redirects, endless bodies,
a name that resolves elsewhere at connect time; a real HTTP server on loopback."""

import http.server
import ipaddress
import os
import threading
import time
import urllib.parse

import pytest

from cloudlet_compute.errors import FetchError
from cloudlet_compute.progress import NullProgress
from cloudlet_compute.read import fetch, fetchpolicy
from cloudlet_compute.read.fetchpolicy import REFUSED, FetchPolicy, RefusedURL
from stack.httpserve import FileServer

PUBLIC = "93.184.216.34"
OWN = "10.9.8.7"


def resolver(table):
    return lambda name, port: {ipaddress.ip_address(a) for a in table[name]}


def policy(**kwargs):
    kwargs.setdefault("resolve", resolver({
        "overlays.example": [PUBLIC], "mixed.example": [PUBLIC, "127.0.0.1"],
        "127.0.0.1": ["127.0.0.1"], "::1": ["::1"], "169.254.169.254": ["169.254.169.254"],
        "0.0.0.0": ["0.0.0.0"], OWN: [OWN], "224.0.0.1": ["224.0.0.1"],
        "mapped.example": ["::ffff:127.0.0.1"], PUBLIC: [PUBLIC]}))
    kwargs.setdefault("host_addresses", {ipaddress.ip_address(OWN)})
    return FetchPolicy(**kwargs)


def check(pol, url):
    pol.check(urllib.parse.urlsplit(url))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/o.zip", "http://[::1]/o.zip", "http://169.254.169.254/latest",
    "http://0.0.0.0/o.zip", "http://%s/o.zip" % OWN, "http://224.0.0.1/o.zip",
    "http://mapped.example/o.zip", "http://mixed.example/o.zip",
    "http://overlays.example:8080/o.zip", "http://overlays.example:5000/o.zip",
    "http://overlays.example:99999/o.zip"])
def test_the_defaults_refuse_special_and_own_addresses_and_other_ports(url):
    with pytest.raises(RefusedURL) as err:
        check(policy(), url)
    assert str(err.value) == REFUSED


def test_the_defaults_allow_a_public_host_on_80_and_443():
    check(policy(), "http://overlays.example/o.zip")
    check(policy(), "https://overlays.example/o.zip")
    check(policy(), "http://%s:443/o.zip" % PUBLIC)


def test_allowed_hosts_restrict_and_lift_the_defaults_and_disallowed_wins():
    pol = policy(allowed_hosts=["127.0.0.1/32", "overlays.example"], allowed_ports=[])
    check(pol, "http://127.0.0.1:8000/o.zip")
    check(pol, "http://overlays.example:81/o.zip")
    with pytest.raises(RefusedURL):
        check(pol, "http://%s/o.zip" % PUBLIC)       # not in the allowed list
    pol = policy(allowed_hosts=["127.0.0.0/8"], disallowed_hosts=["127.0.0.1"])
    with pytest.raises(RefusedURL):
        check(pol, "http://127.0.0.1/o.zip")
    with pytest.raises(RefusedURL):
        policy(disallowed_hosts=["93.184.0.0/16"]).check_peer("x", PUBLIC)


def test_an_unresolvable_host_is_a_plain_fetch_error():
    def nothing(name, port):
        raise OSError("no such host")
    with pytest.raises(FetchError, match="does not resolve"):
        check(FetchPolicy(resolve=nothing), "http://nowhere.invalid/o.zip")


class Server(http.server.ThreadingHTTPServer):
    """One behaviour per path: /redirect (302 to /data), /endless (ignores Range, streams
    forever), /data (a few bytes, no Range support); counts requests."""

    def __init__(self):
        self.requests = 0
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path, host="127.0.0.1"):
        return "http://%s:%d%s" % (host, self.server_address[1], path)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests += 1
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/data")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if self.path == "/endless":
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                return
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.shutdown()
    srv.server_close()


LOOPBACK_OK = dict(allowed_hosts=["127.0.0.1"], allowed_ports=[])


def test_a_refused_url_is_never_connected_to(server, tmp_path):
    with pytest.raises(RefusedURL):
        fetch.open_source(server.url("/data"), str(tmp_path), NullProgress(),
                          policy=FetchPolicy())
    assert server.requests == 0


def test_redirects_are_refused_under_a_policy_and_followed_without(server, tmp_path):
    with pytest.raises(FetchError, match="redirect.*not followed"):
        fetch.open_source(server.url("/redirect"), str(tmp_path), NullProgress(),
                          policy=FetchPolicy(**LOOPBACK_OK))
    assert server.requests == 1
    source, temp = fetch.open_source(server.url("/redirect"), str(tmp_path), NullProgress())
    try:
        assert source.read(0, 5) == b"hello"
    finally:
        source.close()
        os.unlink(temp)


def test_an_endless_body_stops_at_max_bytes_and_leaves_no_file(server, tmp_path):
    with pytest.raises(FetchError, match="larger than the 1048576 bytes"):
        fetch.open_source(server.url("/endless"), str(tmp_path), NullProgress(),
                          policy=FetchPolicy(**LOOPBACK_OK), max_bytes=1 << 20)
    assert os.listdir(tmp_path) == []


def test_a_download_is_labelled_by_its_url_not_its_temp_path(server, tmp_path):
    source, temp = fetch.open_source(server.url("/data"), str(tmp_path), NullProgress(),
                                     policy=FetchPolicy(**LOOPBACK_OK))
    try:
        with pytest.raises(FetchError) as err:
            source.read(0, 6)
        assert str(tmp_path) not in str(err.value) and server.url("/data") in str(err.value)
    finally:
        source.close()
        os.unlink(temp)


def test_a_name_that_connects_elsewhere_is_refused_before_sending(server, tmp_path):
    """``localhost`` passes the pre-check (the resolver says a public address), but the
    connection lands on 127.0.0.1: the peer check refuses it before the request is sent."""
    rebinding = FetchPolicy(allowed_ports=[], resolve=lambda name, port: {
        ipaddress.ip_address(PUBLIC)})
    with pytest.raises(RefusedURL):
        fetch.open_source(server.url("/data", host="localhost"), str(tmp_path),
                          NullProgress(), policy=rebinding)
    assert server.requests == 0


def test_host_addresses_include_loopback():
    assert ipaddress.ip_address("127.0.0.1") in fetchpolicy._host_addresses()


@pytest.mark.parametrize("no_ranges", [False, True], ids=["ranged", "whole"])
def test_a_trickling_server_is_cut_off_at_the_time_limit_and_leaves_no_file(tmp_path,
                                                                            no_ranges):
    """The time limit bounds the whole download, however the server dribbles its bytes: at
    64 KiB/s a 1 MiB overlay would take 16 s; the limit of 1 s ends it."""
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "o.zip").write_bytes(os.urandom(1 << 20))
    work = tmp_path / "work"
    work.mkdir()
    limited = FetchPolicy(time_limit=1, **LOOPBACK_OK)
    with FileServer(str(tmp_path / "served"), no_ranges=no_ranges, rate=64 << 10) as served:
        url = served.url("o.zip")
        t0 = time.monotonic()
        with pytest.raises(FetchError) as err:
            source, _ = fetch.open_source(url, str(work), NullProgress(), policy=limited,
                                          tail_hint=16)
            b"".join(source.stream(0, source.size))
        took = time.monotonic() - t0
    assert str(err.value) == ("the download of %s did not end within 1 s, this cloud's "
                              "overlay fetch time limit" % url)
    assert 1 <= took < 3, took
    assert os.listdir(work) == []


def test_a_download_within_the_time_limit_is_whole(tmp_path):
    data = os.urandom(256 << 10)
    (tmp_path / "o.zip").write_bytes(data)
    with FileServer(str(tmp_path), rate=1 << 20) as served:
        source, _ = fetch.open_source(served.url("o.zip"), str(tmp_path), NullProgress(),
                                      policy=FetchPolicy(time_limit=30, **LOOPBACK_OK))
        assert b"".join(source.stream(0, source.size)) == data
