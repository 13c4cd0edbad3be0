"""``cloudlet-client``: base VMs, VM overlays, VM synthesis and VM handoff on an OpenStack++
cloud.

The original's command set (``import-base``, ``create-overlay``, ``synthesis`` ...) with
today's authentication: ``--os-cloud`` / ``OS_CLOUD`` and ``clouds.yaml``, or ``OS_*``
variables, through openstacksdk. Nothing is saved. The work is done in
``client.core``, which the ``openstack cloudlet`` plugin and the Horizon panel share; so
are the options (``client.core.options``).
"""

import argparse
import json
import logging
import os
import sys
import traceback

import openstack

from client.core import bases, errors, lookups, options, overlays, sessions, synthesis
from client.core.options import CLI
from client.core.waiting import progress_bar
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import CloudletError
from cloudlet_compute.progress import NullProgress

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
    return progress_bar if not args.json else NullProgress


def cmd_import_base(args, conn):
    progress = _bar(args)("uploading", None)
    ids = bases.import_base(conn, args.package, args.name,
                            "public" if args.public else "private", progress)
    _print(args, {model.IMPORT_KEYS[t]: i for t, i in ids.items()})


def cmd_export_base(args, conn):
    _print(args, bases.export_base(conn, args.base_image, args.package, _bar(args)))


def cmd_list_base(args, conn):
    _print(args, bases.list_bases(conn),
           ["id", "name", "base_id", "status", "min_ram", "min_disk"])


def cmd_resume_base(args, conn):
    _print(args, bases.resume_base(conn, args.base_image, args.name, args.flavor,
                                   args.network, args.wait, args.timeout))


def cmd_create_base(args, conn):
    _print(args, bases.create_base(conn, args.server, args.name, args.wait, args.timeout))


def cmd_cache_base(args, conn):
    _print(args, bases.cache_base(conn, args.base_image, args.aggregate,
                                  "%s list-base-hosts" % PROG))


def cmd_list_base_hosts(args, conn):
    _print(args, bases.cached_bases(conn), bases.HOST_COLUMNS)


def cmd_create_overlay(args, conn):
    _print(args, overlays.create_overlay(conn, args.server, args.name, args.wait,
                                         args.timeout))


def cmd_list_overlay(args, conn):
    _print(args, overlays.list_overlays(conn), ["id", "name", "status", "size", "base_id"])


def cmd_download(args, conn):
    _print(args, overlays.download(conn, args.overlay_image, args.file, _bar(args)))


def cmd_synthesis(args, conn):
    _print(args, synthesis.synthesis(conn, args.overlay_url, args.name, args.flavor,
                                     args.network, args.wait, args.timeout,
                                     overlay_image=args.overlay_image))


def cmd_handoff(args, conn):
    _print(args, options.run_handoff(conn, args, _bar(args)))


def cmd_ext_list(args, conn):
    _print(args, lookups.list_extensions(conn, args.name), ["alias", "name", "updated"])


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
    options.add_name(p, CLI, "image name prefix")
    p.add_argument("--public", action="store_true", help="make the images public (admin)")
    p = command("export-base", cmd_export_base, "download a base VM as a base package")
    options.add_base_ref(p, CLI, "base_image")
    p.add_argument("package", metavar="PKG.zip")
    command("list-base", cmd_list_base, "list the base VMs (their disk images)")
    p = command("resume-base", cmd_resume_base,
                "create a server from a base VM: its memory is restored, it is not booted")
    options.add_base_ref(p, CLI, "base_image")
    options.add_name(p, CLI, "server name")
    options.add_boot(p, CLI)
    p = command("create-base", cmd_create_base,
                "snapshot a running server into a new base VM (action cloudlet-base)")
    options.add_server(p, CLI)
    options.add_name(p, CLI, "image name prefix")
    options.add_wait(p, CLI)
    p = command("cache-base", cmd_cache_base,
                "pre-cache a base VM on the compute hosts of an aggregate (admin; nova's "
                "image cache)")
    options.add_base_ref(p, CLI, "base_image")
    options.add_aggregate(p, CLI)
    command("list-base-hosts", cmd_list_base_hosts,
            "list the base VMs each compute host caches (admin)")
    p = command("create-overlay", cmd_create_overlay,
                "build the VM overlay of a server resumed from a base VM "
                "(action cloudlet-overlay-finish)")
    options.add_server(p, CLI)
    options.add_name(p, CLI, "overlay image name")
    options.add_wait(p, CLI)
    command("list-overlay", cmd_list_overlay, "list the VM overlay images")
    p = command("download", cmd_download, "save a VM overlay image as a file")
    p.add_argument("overlay_image", metavar="OVERLAY_IMAGE", help="overlay image id or name")
    p.add_argument("file", metavar="FILE")
    p = command("synthesis", cmd_synthesis,
                "create a server from a VM overlay (at a URL or in Glance) and the base VM "
                "it needs")
    options.add_overlay_source(p, CLI)
    options.add_name(p, CLI, "server name")
    options.add_boot(p, CLI)
    p = command("handoff", cmd_handoff,
                "move a running server to another OpenStack++ cloud (action "
                "cloudlet-handoff), or store its state as a VM overlay image (--residue)")
    options.add_server(p, CLI)
    options.add_handoff(p, CLI)
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
        conn = sessions.connect(args.os_cloud)
        args.func(args, conn)
    except KeyboardInterrupt:
        print("%s: error: interrupted" % PROG, file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is one line and an exit code
        error = errors.translate(exc)
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
