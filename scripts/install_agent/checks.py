"""The read-only checks of install, and the keystone/nova API client they and verify use."""

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request

from .constants import PASTE_KEY, PASTE_SECTION, SUPPORTED_HORIZON, SUPPORTED_NOVA
from .ini import ini_get
from .report import Failed, Refused
from .target import read_text, sh


class Api:
    """Keystone password auth and nova calls with urllib (credentials from clouds.yaml)."""

    def __init__(self, clouds, cloud):
        if not clouds or cloud not in (clouds.get("clouds") or {}):
            raise Refused("no cloud %r in the target's clouds.yaml (give --cloud/--clouds-yaml)"
                          % cloud)
        self.cfg = clouds["clouds"][cloud]
        self.token, self.compute = None, None

    def _req(self, method, url, body=None, headers=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=dict(
            {"Content-Type": "application/json", "Accept": "application/json"},
            **(headers or {})))
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")

    def login(self):
        a = self.cfg["auth"]
        url = a["auth_url"].rstrip("/")
        if not url.endswith("/v3"):
            url += "/v3"
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": a["username"], "password": a["password"],
            "domain": {"name": a.get("user_domain_name", "Default")}}}},
            "scope": {"project": {"name": a["project_name"],
                                  "domain": {"name": a.get("project_domain_name", "Default")}}}}}
        try:
            _, headers, doc = self._req("POST", url + "/auth/tokens", body)
        except (urllib.error.URLError, OSError) as e:
            raise Refused("keystone at %s does not answer: %s" % (url, e))
        self.token = headers.get("X-Subject-Token") or headers.get("x-subject-token")
        region = self.cfg.get("region_name")
        iface = self.cfg.get("interface", "public")
        for svc in doc["token"].get("catalog", []):
            if svc["type"] == "compute":
                for ep in svc["endpoints"]:
                    if ep["interface"] == iface and (not region or ep.get("region_id") in
                                                     (region, None) or ep.get("region") == region):
                        self.compute = ep["url"].rstrip("/")
        if not self.compute:
            raise Refused("no compute endpoint in keystone's catalog")
        return self

    def get(self, path):
        try:
            return self._req("GET", self.compute + path, headers={"X-Auth-Token": self.token})[2]
        except urllib.error.HTTPError as e:
            if e.code == 401:
                self.login()
                return self._req("GET", self.compute + path,
                                 headers={"X-Auth-Token": self.token})[2]
            raise

    def extensions(self):
        return [e["alias"] for e in self.get("/extensions")["extensions"]]

    def compute_services(self):
        return self.get("/os-services?binary=nova-compute")["services"]


def wait(cond, timeout, what, interval=1.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if cond():
                return
        except Exception as e:  # noqa: BLE001 - services restarting
            last = e
        time.sleep(interval)
    raise Failed("timeout after %ds waiting for %s%s" % (timeout, what, (
        " (last error: %s)" % last) if last else ""))


def check_target(t, need_compute=True):
    """Refuse (one line) unless the target is something we support, running. Changes nothing."""
    facts = t.probe()
    if not facts["nova"]:
        raise Refused("nova is not installed in %s's environment" % t.python)
    if facts["nova"] not in SUPPORTED_NOVA:
        raise Refused("nova %s is not supported (supported: %s)" % (
            facts["nova"], ", ".join(SUPPORTED_NOVA)))
    if facts["horizon"] and facts["horizon"] not in SUPPORTED_HORIZON and \
            t.opts.get("horizon", "auto") != "skip":
        raise Refused("horizon %s is not supported (supported: %s; --horizon skip leaves "
                      "Horizon alone)" % (facts["horizon"], ", ".join(SUPPORTED_HORIZON)))
    for f in (t.paste_ini, t.compute_conf):
        if not os.path.exists(f):
            raise Refused("%s does not exist" % f)
    paste = read_text(t.paste_ini)
    if ini_get(paste, PASTE_SECTION, PASTE_KEY) is None:
        raise Refused("%s has no [%s] %s" % (t.paste_ini, PASTE_SECTION, PASTE_KEY))
    uri = t.libvirt_uri()
    if shutil.which("virsh"):
        r = sh(["virsh", "-c", uri, "version"], timeout=60)
        err = "; ".join(re.sub(r"^error:\s*", "", x.strip()) for x in r.stderr.splitlines()
                        if x.strip()) if r.returncode else None
    else:
        r = sh([t.python, "-c", "import libvirt,sys; libvirt.open(sys.argv[1]).close()", uri])
        err = (r.stderr.strip().splitlines() or [""])[-1] if r.returncode else None
    if err is not None:
        raise Refused("libvirt is not reachable at %s: %s" % (uri, err.strip() or "error"))
    alive, why = t.compute_process_alive()
    if not alive:
        raise Refused(why)
    if facts.get("clouds_error"):
        raise Refused("cannot read %s: %s" % (t.clouds_yaml, facts["clouds_error"]))
    api = Api(facts["clouds"], t.cloud).login()
    try:
        services = api.compute_services()
    except Exception as e:  # noqa: BLE001
        raise Refused("nova-api at %s does not answer GET /os-services: %s" % (api.compute, e))
    host = t.compute_host()
    mine = [s for s in services if s.get("host") == host]
    if need_compute and not any(s.get("state") == "up" for s in mine):
        raise Refused("nova-compute on host %s is %s" % (
            host, "down (nova's service list says so)" if mine else
            "not registered with nova"))
    return api

