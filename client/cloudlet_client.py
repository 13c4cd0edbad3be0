"""``cloudlet-client``: base VMs, VM overlays, VM synthesis and VM handoff on an OpenStack++
cloud.

The original's command set (``import-base``, ``create-overlay``, ``synthesis`` ...) with
today's authentication: ``--os-cloud`` / ``OS_CLOUD`` and ``clouds.yaml``, or ``OS_*``
variables, through openstacksdk. Nothing is saved. The work is done in
``client.operations``, which the ``openstack cloudlet`` plugin shares.
"""

import argparse
import json
import logging
import os
import sys
import traceback

import openstack

from client import operations as ops
from cloudlet_compute.errors import CloudletError

LOG = logging.getLogger(__name__)
PROG = "cloudlet-client"


def _print(args, result, columns=None):
    """Print ``result`` (a dict, or a list of dicts) as JSON or as plain text."""
    if args.json:
        print(json.dumps(result, indent=1))
        return
    if isinstance(result, dict):
        width = max(map(len, result)) if result else 0
        for key, value in result.items():
            print("%-*s  %s" % (width, key, value))
        return
    columns = columns or (list(result[0]) if result else [])
    rows = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in result]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _bar(args):
    return ops.progress_bar if not args.json else ops.NullProgress


def cmd_import_base(args, conn):
    progress = _bar(args)("uploading", None)
    ids = ops.import_base(conn, args.package, args.name,
                          "public" if args.public else "private", progress)
    _print(args, {ops.model.RESPONSE_KEYS[t]: i for t, i in ids.items()})


def cmd_export_base(args, conn):
    _print(args, ops.export_base(conn, args.base_image, args.package, _bar(args)))


def cmd_list_base(args, conn):
    _print(args, ops.list_bases(conn),
           ["id", "name", "base_id", "status", "min_ram", "min_disk"])


def cmd_resume_base(args, conn):
    _print(args, ops.resume_base(conn, args.base_image, args.name, args.flavor, args.network,
                                 args.wait, args.timeout))


def cmd_create_base(args, conn):
    _print(args, ops.create_base(conn, args.server, args.name, args.wait, args.timeout))


def cmd_create_overlay(args, conn):
    _print(args, ops.create_overlay(conn, args.server, args.name, args.wait, args.timeout))


def cmd_list_overlay(args, conn):
    _print(args, ops.list_overlays(conn), ["id", "name", "status", "size", "base_id"])


def cmd_download(args, conn):
    _print(args, ops.download(conn, args.overlay_image, args.file, _bar(args)))


def cmd_synthesis(args, conn):
    _print(args, ops.synthesis(conn, args.overlay_url, args.name, args.flavor, args.network,
                               args.wait, args.timeout))


def cmd_handoff(args, conn):
    dest = None
    if args.residue is None:
        dest = ops.connect_destination(args.dest_cloud, args.dest_auth_url, args.dest_username,
                                       args.dest_password, args.dest_project,
                                       args.dest_project_domain, args.dest_user_domain)
    _print(args, ops.handoff(conn, args.server, dest, args.dest_vmname, args.residue,
                             args.wait, args.timeout, _bar(args)))


def cmd_ext_list(args, conn):
    _print(args, ops.list_extensions(conn, args.name), ["alias", "name", "updated"])


def _add_wait(parser, help_text="wait until done, showing progress (Ctrl-C undoes it)"):
    parser.add_argument("--wait", action="store_true", help=help_text)
    parser.add_argument("--timeout", type=int, default=ops.DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="give up waiting after this long (default: %(default)s)")


def _add_boot(parser):
    parser.add_argument("--flavor", help="flavor name or id (default: the smallest flavor "
                                         "that fits the base VM's min_ram and min_disk)")
    parser.add_argument("--network", default="auto",
                        help="network name or id, or 'auto' or 'none' (default: %(default)s)")
    _add_wait(parser)


def _add_handoff(parser):
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--dest-cloud", metavar="CLOUD",
                       help="destination cloud in clouds.yaml")
    where.add_argument("--dest-auth-url", metavar="URL",
                       help="destination Keystone (v3), with --dest-username, "
                            "--dest-password and --dest-project")
    where.add_argument("--residue", metavar="NAME",
                       help="no destination: store the server's current state as VM overlay "
                            "image NAME in this cloud's Glance (the server keeps running)")
    parser.add_argument("--dest-username", metavar="USER")
    parser.add_argument("--dest-password", metavar="PASSWORD",
                        default=os.environ.get("CLOUDLET_DEST_PASSWORD"),
                        help="(default: $CLOUDLET_DEST_PASSWORD)")
    parser.add_argument("--dest-project", metavar="PROJECT", help="project name")
    parser.add_argument("--dest-project-domain", metavar="DOMAIN",
                        help="project domain name (default: Default)")
    parser.add_argument("--dest-user-domain", metavar="DOMAIN",
                        help="user domain name (default: Default)")
    parser.add_argument("--dest-vmname", metavar="NAME",
                        help="server name at the destination (default: the same name)")
    _add_wait(parser, "wait until the server runs at the destination (or the residue image "
                      "is active), showing progress; Ctrl-C stops waiting, the handoff "
                      "goes on (a residue image is deleted)")


def build_parser():
    """The argument parser of ``cloudlet-client``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Cloudlet base VMs, VM overlays, VM synthesis and VM handoff "
                               "on an OpenStack++ cloud.")
    parser.add_argument("--os-cloud", default=os.environ.get("OS_CLOUD"), metavar="CLOUD",
                        help="cloud in clouds.yaml (default: $OS_CLOUD; without it, the "
                             "OS_* variables)")
    parser.add_argument("--debug", action="store_true",
                        help="show the HTTP exchange and tracebacks")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = command("import-base", cmd_import_base,
                "upload a base package (cloudlet base export) as four linked Glance images")
    p.add_argument("package", metavar="PKG.zip")
    p.add_argument("name", metavar="NAME", help="image name prefix")
    p.add_argument("--public", action="store_true", help="make the images public (admin)")
    p = command("export-base", cmd_export_base, "download a base VM as a base package")
    p.add_argument("base_image", metavar="BASE_IMAGE",
                   help="base disk image id or name, or base id")
    p.add_argument("package", metavar="PKG.zip")
    command("list-base", cmd_list_base, "list the base VMs (their disk images)")
    p = command("resume-base", cmd_resume_base,
                "create a server from a base VM: its memory is restored, it is not booted")
    p.add_argument("base_image", metavar="BASE_IMAGE",
                   help="base disk image id or name, or base id")
    p.add_argument("name", metavar="NAME", help="server name")
    _add_boot(p)
    p = command("create-base", cmd_create_base,
                "snapshot a running server into a new base VM (action cloudlet-base)")
    p.add_argument("server", metavar="SERVER", help="server id or name")
    p.add_argument("name", metavar="NAME", help="image name prefix")
    _add_wait(p)
    p = command("create-overlay", cmd_create_overlay,
                "build the VM overlay of a server resumed from a base VM "
                "(action cloudlet-overlay-finish)")
    p.add_argument("server", metavar="SERVER", help="server id or name")
    p.add_argument("name", metavar="NAME", help="overlay image name")
    _add_wait(p)
    command("list-overlay", cmd_list_overlay, "list the VM overlay images")
    p = command("download", cmd_download, "save a VM overlay image as a file")
    p.add_argument("overlay_image", metavar="OVERLAY_IMAGE", help="overlay image id or name")
    p.add_argument("file", metavar="FILE")
    p = command("synthesis", cmd_synthesis,
                "create a server from the VM overlay at a URL and the base VM it needs")
    p.add_argument("overlay_url", metavar="OVERLAY_URL")
    p.add_argument("name", metavar="NAME", help="server name")
    _add_boot(p)
    p = command("handoff", cmd_handoff,
                "move a running server to another OpenStack++ cloud (action "
                "cloudlet-handoff), or store its state as a VM overlay image (--residue)")
    p.add_argument("server", metavar="SERVER", help="server id or name")
    _add_handoff(p)
    p = command("ext-list", cmd_ext_list, "list the compute API extensions")
    p.add_argument("name", metavar="NAME", nargs="?", help="one extension alias")
    return parser


def main(argv=None):
    """Entry point of ``cloudlet-client``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        openstack.enable_logging(debug=True, http_debug=True, stream=sys.stderr)
    else:
        logging.basicConfig(level=logging.WARNING, format="%s: %%(message)s" % PROG)
        openstack.enable_logging(debug=False)
    try:
        conn = ops.connect(args.os_cloud)
        args.func(args, conn)
    except KeyboardInterrupt:
        print("%s: error: interrupted" % PROG, file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is one line and an exit code
        error = ops.translate(exc)
        if error is None and isinstance(exc, OSError):
            error = CloudletError("%s: %s" % (exc.filename or "I/O", exc.strerror or exc))
        if args.debug:
            traceback.print_exc()
        if error is None:
            error = CloudletError("%s: %s" % (type(exc).__name__, exc))
        print("%s: error: %s" % (PROG, error), file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
