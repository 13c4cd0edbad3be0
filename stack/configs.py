"""Configuration files of a cloud's services, rendered from stack/templates into STATE/etc.

``settings(...)`` is what `up` was asked for (compute driver, API router, extra nova config,
OpenStack++ on or off; saved as STATE/settings.json, which `restart` reads back);
``write_configs(p, settings)`` renders every file (a file is rewritten only when its text
changes, so that a service's configuration hash changes only with its content).
"""
import json
import os
import shutil
import string

from scripts.install_agent.constants import SCHEDULER_WEIGHERS, SCHEDULER_WEIGHERS_COMMENT
from .paths import TEMPLATES, VPREFIX, StackError
from . import topology
from .topology import SERVICE_PASSWORD

DEFAULT_COMPUTE_DRIVER = "libvirt.LibvirtDriver"
DEFAULT_API_ROUTER = "nova.api.openstack.compute:APIRouterV21.factory"


def settings(compute_driver=None, api_router=None, nova_extra_conf=None, cloudlet=False):
    return {
        "cloudlet": bool(cloudlet),
        "compute_driver": compute_driver or os.environ.get("CLOUDLET_COMPUTE_DRIVER")
        or DEFAULT_COMPUTE_DRIVER,
        "api_router": api_router or os.environ.get("CLOUDLET_API_ROUTER") or DEFAULT_API_ROUTER,
        "nova_extra_conf": os.path.abspath(nova_extra_conf or os.environ.get(
            "CLOUDLET_NOVA_EXTRA_CONF")) if (nova_extra_conf or os.environ.get(
                "CLOUDLET_NOVA_EXTRA_CONF")) else "",
    }


def render(name, values, dest):
    with open(os.path.join(TEMPLATES, name)) as f:
        text = string.Template(f.read()).substitute(values)
    if os.path.exists(dest):
        with open(dest) as f:
            if f.read() == text:
                return
    with open(dest, "w") as f:
        f.write(text)


def db_url(p):
    """(prefix, suffix) around a database name: the shared MariaDB over its unix socket."""
    return ("mysql+pymysql://root@localhost/",
            "%s?unix_socket=%s&charset=utf8" % (p.c.db_suffix, p.infra.mysql_sock))


def write_configs(p, settings):
    prefix, suffix = db_url(p)
    c = p.c
    cloudlet = ""
    if settings.get("cloudlet"):
        cloudlet = ("[cloudlet]\n# Address of this cloud on the veth link between the clouds"
                    " (VM hand-off).\nhandoff_host = %s\n" % c.link_ip)
        for key, value, comment in topology.EMBEDDED_CLOUDLET_OPTIONS:
            cloudlet += (comment + "\n" if comment else "") + "%s = %s\n" % (key, value)
        cloudlet += "\n[filter_scheduler]\n%s\nweight_classes = %s\n" % (
            SCHEDULER_WEIGHERS_COMMENT, ",".join(SCHEDULER_WEIGHERS))
    base = {
        "state": p.state, "etc": p.etc, "logs": p.logs, "host": c.nova_host,
        "my_ip": c.host, "rabbit_url": c.rabbit_url,
        "keystone_url": c.keystone_url, "service_password": SERVICE_PASSWORD,
        "db_prefix": prefix, "db_suffix": suffix, "serial_port_range": c.serial_port_range,
        "compute_driver": settings["compute_driver"],
        "instance_name_template": c.instance_name_template,
        "integration_bridge": c.integration_bridge, "provider_bridge": c.provider_bridge,
        "ovsdb_connection": c.ovsdb_connection, "of_listen_address": c.of_listen_address,
        "cloudlet_section": cloudlet,
    }
    with open(os.path.join(TEMPLATES, "_authtoken.inc")) as f:
        authtoken = f.read()

    def vals(user):
        v = dict(base)
        v["authtoken"] = string.Template(authtoken).substitute(
            dict(base, service_user=user))
        return v

    e = p.etc
    render("keystone.conf", vals("keystone"), os.path.join(e, "keystone", "keystone.conf"))
    render("placement.conf", vals("placement"), os.path.join(e, "placement", "placement.conf"))
    render("glance-api.conf", vals("glance"), os.path.join(e, "glance", "glance-api.conf"))
    render("nova.conf", vals("nova"), os.path.join(e, "nova", "nova.conf"))
    render("nova-compute.conf", vals("nova"), os.path.join(e, "nova", "nova-compute.conf"))
    render("neutron.conf", vals("neutron"), os.path.join(e, "neutron", "neutron.conf"))
    for n in ("ml2_conf.ini", "openvswitch_agent.ini", "dhcp_agent.ini"):
        render(n, vals("neutron"), os.path.join(e, "neutron", n))
    small = {
        os.path.join(e, "nova", "nova-api.conf"): "[DEFAULT]\nlog_file = %s\n" % p.log("nova-api"),
        os.path.join(e, "neutron", "neutron-api.conf"):
            "[DEFAULT]\nlog_file = %s\n" % p.log("neutron-api"),
    }
    for path, text in small.items():
        with open(path, "w") as f:
            f.write(text)
    # Stock paste files from the venv; nova's gets the API router switch.
    shutil.copyfile(os.path.join(VPREFIX, "etc", "glance", "glance-api-paste.ini"),
                    os.path.join(e, "glance", "glance-api-paste.ini"))
    shutil.copyfile(os.path.join(VPREFIX, "etc", "neutron", "api-paste.ini"),
                    os.path.join(e, "neutron", "api-paste.ini"))
    with open(os.path.join(VPREFIX, "etc", "nova", "api-paste.ini")) as f:
        paste = f.read()
    stock = "[app:osapi_compute_app_v21]\npaste.app_factory = %s\n" % DEFAULT_API_ROUTER
    if stock not in paste:
        raise StackError("nova's api-paste.ini has no stock [app:osapi_compute_app_v21]")
    paste = paste.replace(stock, (
        "[app:osapi_compute_app_v21]\n"
        "# >>> CLOUDLET api_router: default stock %s.\n"
        "# Override: `python -m stack up --api-router module:Class.factory` or "
        "CLOUDLET_API_ROUTER.\n"
        "paste.app_factory = %s\n"
        "# <<< CLOUDLET api_router\n") % (DEFAULT_API_ROUTER, settings["api_router"]))
    path = os.path.join(e, "nova", "api-paste.ini")
    if not os.path.exists(path) or open(path).read() != paste:
        with open(path, "w") as f:
            f.write(paste)
    with open(os.path.join(p.state, "settings.json"), "w") as f:
        json.dump(settings, f, indent=1)


def nova_conf_args(p, settings, compute=False):
    """(files, --config-file arguments) of a nova service (COMPUTE: nova-compute's)."""
    files = [os.path.join(p.etc, "nova", "nova.conf")]
    if compute:
        files.append(os.path.join(p.etc, "nova", "nova-compute.conf"))
    if settings["nova_extra_conf"]:
        files.append(settings["nova_extra_conf"])
    args = []
    for f in files:
        args += ["--config-file", f]
    return files, args
