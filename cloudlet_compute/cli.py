"""The ``cloudlet`` command: base VMs, resume, VM overlays and VM synthesis on libvirt."""

import argparse
import json
import logging
import os
import sys

import uuid

from cloudlet_compute import __version__, bases
from cloudlet_compute.errors import CloudletError
from cloudlet_compute.format import blobcodec
from cloudlet_compute.handoff import adaptive, destination, source, wire
from cloudlet_compute.host import domains, instances
from cloudlet_compute.progress import Progress
from cloudlet_compute.read import overlayinfo, synthesis
from cloudlet_compute.write import overlay

LOG = logging.getLogger("cloudlet")


def _progress(label, total, unit="B"):
    return Progress(label, total, unit)


def _store(args):
    return bases.BaseStore(args.home)


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return "%d %s" % (n, unit) if unit == "B" else "%.1f %s" % (n, unit)
        n /= 1024.0
    return str(n)


def cmd_base_create(args):
    store = _store(args)
    base = store.create_from_domain(domains.connect(args.connect), args.domain, args.name,
                                    _progress("hashing disk", None))
    print(base.id)


def cmd_base_list(args):
    rows = [b.summary() for b in _store(args).list()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("%-64s  %-20s  %10s  %10s" % ("ID", "NAME", "DISK", "MEMORY"))
    for row in rows:
        print("%-64s  %-20s  %10s  %10s" % (row["id"], row["name"], _human(row["disk_size"]),
                                            _human(row["memory_size"])))


def cmd_base_export(args):
    store = _store(args)
    base = store.get(args.base)
    progress = _progress("exporting", base.disk_size + base.memory_size)
    store.export(args.base, args.file, progress)
    progress.finish()
    print(args.file)


def cmd_base_import(args):
    base = _store(args).import_package(args.file, args.name, _progress("importing", None))
    print(base.id)


def cmd_base_delete(args):
    base = _store(args).delete(args.base, domains.connect(args.connect))
    print("deleted base VM %s (%s)" % (base.id, base.name))


def _compression(text):
    """``--compression``: checked here so a typo is one line before anything starts."""
    try:
        adaptive.parse(text)
    except CloudletError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def cmd_handoff_send(args):
    store, conn = _store(args), domains.connect(args.connect)
    domains.lookup(conn, args.domain)
    dest_uuid = str(uuid.uuid4())
    listener = wire.Listener(args.listen)
    ticket = wire.ticket(listener.url, dest_uuid, listener.secret_text)
    if args.ticket_file:
        with open(os.open(args.ticket_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                  "w") as f:
            f.write(ticket + "\n")
    else:
        print(ticket, flush=True)
    channel = listener.accept(dest_uuid, args.wait)
    progress = _progress("handing off", 100, unit="%")
    stats = source.send(conn, store, args.domain, channel,
                        lambda done: progress.update(int(done * 100) - progress.done),
                        codec=args.compression, dirty_bitmap=not args.rescan_disk)
    progress.finish()
    domains.destroy(conn, args.domain)
    instances.Placement.in_home(store.home, args.domain).discard()
    if args.json:
        print(json.dumps(stats, indent=1))


def cmd_handoff_receive(args):
    store, conn = _store(args), domains.connect(args.connect)
    ticket = args.ticket
    if ticket.startswith("@"):
        with open(ticket[1:]) as f:
            ticket = f.read()
    url, dest_uuid, secret = wire.parse_ticket(ticket)
    channel = wire.connect(url, dest_uuid, secret)
    placement = instances.Placement(args.name, os.path.join(store.home, "instances", args.name),
                                    uuid=dest_uuid)
    reception = destination.receive(conn, store, channel, placement)
    reception.running()
    if args.json:
        print(json.dumps(dict(reception.stats, domain=args.name, uuid=dest_uuid), indent=1))
    else:
        print(args.name)


def cmd_resume(args):
    store = _store(args)
    placement = instances.Placement.in_home(store.home, args.name)
    instances.resume(domains.connect(args.connect), store.get(args.base), placement)
    print(placement.name)


def cmd_overlay_create(args):
    meta, timings = overlay.create(domains.connect(args.connect), _store(args), args.domain,
                                   os.path.abspath(args.output), blobcodec.codec_id(args.codec),
                                   args.level, _progress)
    if args.json:
        print(json.dumps({"overlay": args.output, "size": os.path.getsize(args.output),
                          "sources": meta["sources"], "timings": timings}, indent=1))
    else:
        print("%s: %s, %d blobs, %d memory + %d disk chunks changed, captured in %.1f s"
              % (args.output, _human(os.path.getsize(args.output)), len(meta["blobs"]),
                 meta["memory"]["changed"], meta["disk"]["changed"], timings["downtime"]))


def cmd_overlay_info(args):
    meta, size = overlayinfo.info(args.overlay, _store(args).tmp_dir)
    summary = {
        "overlay": args.overlay, "size": size, "format_version": meta["version"],
        "base_vm_sha256": meta["base_vm_sha256"], "codec": meta.get("codec"),
        "memory_image_size": meta["memory"]["image_size"],
        "memory_image_sha256": meta["memory"]["image_sha256"],
        "disk_size": meta["disk"]["size"], "disk_content_sha256": meta["disk"]["content_sha256"],
        "blobs": len(meta["blobs"]),
        "memory_chunks": sum(b["memory_chunks"] for b in meta["blobs"]),
        "disk_chunks": sum(b["disk_chunks"] for b in meta["blobs"]),
        "chunks_by_source": meta.get("sources", {}),
    }
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    for key, value in summary.items():
        print("%-22s %s" % (key, value))


def cmd_synthesis(args):
    store = _store(args)
    timings = synthesis.synthesize(domains.connect(args.connect), store, args.overlay,
                                   instances.Placement.in_home(store.home, args.name), _progress)
    if args.json:
        print(json.dumps({"domain": args.name, "timings": timings}, indent=1))
    else:
        print("%s running (synthesized in %.2f s)" % (args.name, timings["total"]))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="cloudlet", description="OpenStack++ cloudlet tool: base VMs, VM overlays and VM "
        "synthesis on libvirt. State lives in $CLOUDLET_HOME (default ~/.cloudlet).")
    parser.add_argument("--version", action="version", version="cloudlet %s" % __version__)
    parser.add_argument("--home", help="state directory (default: $CLOUDLET_HOME or ~/.cloudlet)")
    parser.add_argument("-c", "--connect", help="libvirt URI (default qemu:///system)")
    parser.add_argument("--debug", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    base = sub.add_parser("base", help="manage base VMs").add_subparsers(
        dest="base_command", required=True, metavar="ACTION")
    p = base.add_parser("create", help="snapshot a running domain into a base VM",
                        description="Snapshot running domain DOMAIN (KVM or QEMU, one raw or "
                        "qcow2 file disk, a qcow2 possibly over a backing chain of files) into "
                        "a base VM: its memory is live-migrated into a file and its disk "
                        "copied while it stops for a moment; it KEEPS RUNNING. Several disks, "
                        "network or block disks, host devices, hugepages and the like are "
                        "refused before anything is touched (README: which domains). Prints "
                        "the base id (sha256 of the disk content, flattened to raw).")
    p.add_argument("domain")
    p.add_argument("--name", required=True, help="name of the base VM")
    p.set_defaults(func=cmd_base_create)
    p = base.add_parser("list", help="list base VMs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_base_list)
    p = base.add_parser("export", help="write a base VM as a package zip")
    p.add_argument("base", help="base id, id prefix or name")
    p.add_argument("file")
    p.set_defaults(func=cmd_base_export)
    p = base.add_parser("import", help="register a base package after checking its hashes")
    p.add_argument("file")
    p.add_argument("--name", help="name to register it under (default: the package's)")
    p.set_defaults(func=cmd_base_import)
    p = base.add_parser("delete", help="remove a base VM no domain uses")
    p.add_argument("base")
    p.set_defaults(func=cmd_base_delete)

    p = sub.add_parser("resume", help="start a new domain from a base VM (memory restored)")
    p.add_argument("base", help="base id, id prefix or name")
    p.add_argument("--name", required=True, help="name of the new domain")
    p.set_defaults(func=cmd_resume)

    ov = sub.add_parser("overlay", help="create or inspect VM overlays").add_subparsers(
        dest="overlay_command", required=True, metavar="ACTION")
    p = ov.add_parser("create", help="build the overlay of a domain resumed from a base",
                      description="Build the VM overlay of running domain DOMAIN against its "
                      "base VM. The domain is paused while its state is captured, then keeps "
                      "running.")
    p.add_argument("domain")
    p.add_argument("-o", "--output", required=True, help="overlay zip to write")
    p.add_argument("--codec", default=blobcodec.NAMES[blobcodec.DEFAULT_CODEC],
                   choices=sorted(blobcodec.IDS), help="blob compression (default %(default)s)")
    p.add_argument("--level", type=int, help="compression level (codec default if omitted)")
    p.add_argument("--json", action="store_true", help="print sizes and timings as JSON")
    p.set_defaults(func=cmd_overlay_create)
    p = ov.add_parser("info", help="describe an overlay (path or URL)")
    p.add_argument("overlay")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_overlay_info)

    ho = sub.add_parser("handoff", help="move a running VM to another host").add_subparsers(
        dest="handoff_command", required=True, metavar="ACTION")
    p = ho.add_parser("send", help="hand a running domain off to the host that takes the ticket",
                      description="Listen on HOST (an ephemeral port) for one destination, "
                      "print its one-time ticket, then live-migrate DOMAIN's memory and disk "
                      "changes (deduplicated against the base VM) to it. The domain is removed "
                      "here only after the destination reports it running; on any failure it "
                      "keeps running here.")
    p.add_argument("domain")
    p.add_argument("--listen", required=True, metavar="HOST", help="address to listen on")
    p.add_argument("--ticket-file", help="write the ticket to this file (mode 0600) instead "
                   "of stdout")
    p.add_argument("--wait", type=float, default=300.0,
                   help="seconds to wait for the destination (default %(default)s)")
    p.add_argument("--compression", default=adaptive.AUTO, type=_compression,
                   metavar="|".join(adaptive.CHOICES[:3]) + "|...",
                   help="auto (default: codec and level per batch from the measured link and "
                   "CPU), or one forced for every batch: none, zstd-N (1-22), xz-N (0-9)")
    p.add_argument("--rescan-disk", action="store_true",
                   help="final disk pass (guest stopped) rereads the whole top layer instead of "
                   "only the chunks a QEMU dirty bitmap marks as written since the first pass")
    p.add_argument("--json", action="store_true", help="print transfer statistics")
    p.set_defaults(func=cmd_handoff_send)
    p = ho.add_parser("receive", help="take a handed-off VM and start it here")
    p.add_argument("ticket", help="the ticket `handoff send` printed, or @FILE holding it")
    p.add_argument("--name", required=True, help="name of the new domain")
    p.add_argument("--json", action="store_true", help="print transfer statistics")
    p.set_defaults(func=cmd_handoff_receive)

    p = sub.add_parser("synthesis", help="rebuild and start a VM from base + overlay",
                       description="Fetch OVERLAY (path or http(s) URL), check it against the "
                       "local base VM, rebuild memory and disk, verify both hashes, and start "
                       "domain NAME with its own UUID, disk and sockets.")
    p.add_argument("overlay")
    p.add_argument("--name", required=True, help="name of the new domain")
    p.add_argument("--json", action="store_true", help="print the domain and phase timings")
    p.set_defaults(func=cmd_synthesis)
    return parser


def main(argv=None):
    """Entry point of ``cloudlet``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except CloudletError as exc:
        print("cloudlet: error: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cloudlet: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
