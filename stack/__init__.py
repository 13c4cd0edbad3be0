"""The embedded OpenStack of OpenStack++: a real single-host cloud on 127.0.0.1.

    python -m stack [--name a|b] up [--cloudlet] [--compute-driver X] [--api-router Y]
                                    [--nova-extra-conf FILE]
    python -m stack [--name a|b] down [--purge]
    python -m stack [--name a|b] status
    python -m stack [--name a|b] restart SERVICE...  # without re-rendering configuration files
    python -m stack [--name a|b] netns-exec CMD...   # run CMD where the provider network lives
    python -m stack shape-link [RATE] | unshape-link # token bucket on the veth link between a and b

(from the repository's root). Cloud "a" (default) is the main one; "b" is a second, independent
cloud whose services run in netns stk-b on 10.251.0.2 (see topology.py). Both share MariaDB,
RabbitMQ, Open vSwitch and libvirtd.

Importable (``import stack`` with the repository's root on sys.path): up(state_dir=None, ...,
name="a"), down(state_dir=None, name="a"), status(state_dir=None, name="a"),
restart(services, name="a"), clouds_yaml_path(state_dir=None, name="a"), connect(cloud,
state_dir=None, name="a"), cloud(name), provider_netns(name="a"), netns_argv(argv, name="a"),
domain_serial_ports(domain_name), shape_link(rate), unshape_link(). Every per-cloud fact is in
``stack.topology.Cloud(name)``. See stack/README.md.

Everything runs as processes started here (no systemd); their PIDs are in STATE/run, their logs
in STATE/logs. `down` stops them by PID and leaves data and logs; `down --purge` also deletes the
state directory.

Modules: topology (the facts), paths (files and directories), processes (starting, stopping,
waiting), configs (rendering stack/templates), services (command lines), infra (packages,
libvirtd, MariaDB, RabbitMQ, OVS), databases (first-run database setup), bootstrap (identity,
compute host, flavors, network; connect), links (network namespaces, the veth link), control
(up/down/status/restart), __main__ (the command line). Beside them, what runs on this
environment: guest (the tiny test guest), story (the cloudlet story on libvirt), novastory (the
same through Nova), httpserve (a Range-capable file server), tempest (Tempest against it).
"""
from .bootstrap import connect
from .control import (cloud, domain_serial_ports, down, netns_argv, provider_netns, restart,
                      status, up)
from .links import LinkError, shape_link, unshape_link
from .paths import StackError, clouds_yaml_path, state_path

__all__ = ["LinkError", "StackError", "cloud", "clouds_yaml_path", "connect",
           "domain_serial_ports", "down", "netns_argv", "provider_netns", "restart",
           "shape_link", "state_path", "status", "unshape_link", "up"]
