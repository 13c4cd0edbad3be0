"""The command line of the embedded OpenStack: ``python -m stack up|down|status|...``."""
import argparse
import os
import sys

from . import __doc__ as DOC
from . import links, topology
from .configs import DEFAULT_API_ROUTER, DEFAULT_COMPUTE_DRIVER
from .control import down, restart, status, up
from .paths import StackError
from .services import SERVICE_GROUPS, SERVICES


def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=argparse.SUPPRESS, choices=topology.NAMES,
                        help="which cloud: a (main, default) or b")
    common.add_argument("--state-dir", default=argparse.SUPPRESS,
                        help="default $CLOUDLET_STACK_DIR or %s for a, .state/stack-NAME "
                        "otherwise" % topology.DEFAULT_STATE)
    ap = argparse.ArgumentParser(prog="python -m stack", description=DOC.split("\n")[0],
                                 parents=[common])
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start the stack (idempotent)", parents=[common])
    u.add_argument("--compute-driver", help="nova [DEFAULT] compute_driver (env "
                   "CLOUDLET_COMPUTE_DRIVER; default %s)" % DEFAULT_COMPUTE_DRIVER)
    u.add_argument("--api-router", help="paste.app_factory of [app:osapi_compute_app_v21] (env "
                   "CLOUDLET_API_ROUTER; default %s)" % DEFAULT_API_ROUTER)
    u.add_argument("--cloudlet", action="store_true",
                   help="enable OpenStack++ (shim, CloudletDriver, cloudlet_api router, "
                   "[cloudlet] handoff_host)")
    u.add_argument("--nova-extra-conf", help="extra config file for every nova service (env "
                   "CLOUDLET_NOVA_EXTRA_CONF)")
    d = sub.add_parser("down", help="stop everything the stack started", parents=[common])
    d.add_argument("--purge", action="store_true", help="also delete the state directory")
    sub.add_parser("status", help="show processes, RSS and domains", parents=[common])
    r = sub.add_parser("restart", parents=[common],
                       help="restart services without re-rendering their configuration")
    r.add_argument("services", nargs="+", metavar="SERVICE",
                   help="%s, or %s" % (" ".join(SERVICES), " ".join(SERVICE_GROUPS)))
    n = sub.add_parser("netns-exec", help="run a command in the provider network's namespace",
                       parents=[common])
    n.add_argument("command", nargs=argparse.REMAINDER)
    sl = sub.add_parser("shape-link", help="token bucket on the veth link between a and b")
    sl.add_argument("rate", nargs="?", default="25mbit")
    sub.add_parser("unshape-link", help="remove the token bucket from the link")
    a = ap.parse_args(argv)
    name = getattr(a, "name", "a")
    state_dir = getattr(a, "state_dir", None)
    try:
        if a.cmd == "up":
            up(state_dir, a.compute_driver, a.api_router, a.nova_extra_conf, a.cloudlet,
               name=name)
        elif a.cmd == "down":
            down(state_dir, a.purge, name=name)
        elif a.cmd == "status":
            status(state_dir, name=name)
        elif a.cmd == "restart":
            restart(a.services, state_dir, name=name)
        elif a.cmd == "netns-exec":
            cmd = topology.Cloud(name).provider_argv(a.command)
            os.execvp(cmd[0], cmd)
        elif a.cmd == "shape-link":
            links.shape_link(a.rate)
            print("\n".join("%s: %s" % kv for kv in links.link_qdiscs().items()))
        elif a.cmd == "unshape-link":
            links.unshape_link()
    except (StackError, links.LinkError) as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
