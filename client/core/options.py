"""The options both command lines share, defined once: ``cloudlet-client`` (argparse) and
the ``openstack cloudlet`` commands (their ``get_parser``) add them with their own
``Style`` of metavars and help text."""

import os

from client.core import handoff
from client.core.waiting import DEFAULT_TIMEOUT

WAIT_HELP = "wait until done, showing progress (Ctrl-C undoes it)"
HANDOFF_WAIT_HELP = ("wait until the server runs at the destination (or the residue image "
                     "is active), showing progress; Ctrl-C stops waiting, the handoff goes "
                     "on (a residue image is deleted)")
BASE_REF_HELP = "base disk image (name or ID) or base ID"


class Style:
    """How a command line spells its options: ``cloudlet-client`` writes ``NAME`` and help
    as it is; openstackclient writes ``<name>`` and help with a capital."""

    def __init__(self, osc):
        self.osc = osc

    def metavar(self, word):
        return "<%s>" % word if self.osc else word.upper().replace("-", "_")

    def help(self, text):
        return text[:1].upper() + text[1:] if self.osc else text


CLI = Style(osc=False)
OSC = Style(osc=True)


# Where a handoff goes (one of them), then the rest of its options: (flag, metavar, help).
HANDOFF_WHERE = (
    ("--dest-cloud", "cloud", "destination cloud in clouds.yaml"),
    ("--dest-auth-url", "auth-url", "destination Keystone (v3), with --dest-username, "
                                    "--dest-password and --dest-project"),
    ("--residue", "name", "no destination: store the server's current state as VM overlay "
                          "image %(metavar)s in this cloud's Glance (the server keeps "
                          "running)"))
HANDOFF_DEST = (
    ("--dest-username", "username", "destination user name"),
    ("--dest-password", "password", "destination password (default: "
                                    "$CLOUDLET_DEST_PASSWORD)"),
    ("--dest-project", "project", "destination project name"),
    ("--dest-project-domain", "domain", "destination project domain name (default: Default)"),
    ("--dest-user-domain", "domain", "destination user domain name (default: Default)"),
    ("--dest-vmname", "name", "server name at the destination (default: the same name)"))


def _add(parser, style, name, word, text, **kwargs):
    parser.add_argument(name, metavar=style.metavar(word), help=style.help(text), **kwargs)


def add_server(parser, style):
    """The positional ``server`` (name or ID)."""
    _add(parser, style, "server", "server", "server (name or ID)")


def add_name(parser, style, what):
    """The positional ``name`` of what a command creates (``what`` says what it names)."""
    _add(parser, style, "name", "name", what)


def add_base_ref(parser, style, dest):
    """The positional base VM reference, stored as ``dest``."""
    _add(parser, style, dest, "base", BASE_REF_HELP)


def add_aggregate(parser, style):
    """``--aggregate`` (required): the host aggregate whose hosts a command acts on."""
    _add(parser, style, "--aggregate", "aggregate", "host aggregate (name or ID) whose "
                                                    "compute hosts get it", required=True)


def add_overlay_source(parser, style):
    """Where a synthesis's overlay is: the positional URL, or ``--overlay-image``."""
    _add(parser, style, "overlay_url", "overlay-url",
         "http(s) URL of the VM overlay (or --overlay-image)", nargs="?")
    _add(parser, style, "--overlay-image", "overlay-image",
         "VM overlay image in this cloud's Glance (name or ID) instead of a URL: "
         "nova-compute fetches it through Glance")


def add_wait(parser, style, help_text=WAIT_HELP):
    """``--wait`` and ``--timeout``."""
    parser.add_argument("--wait", action="store_true", help=style.help(help_text))
    _add(parser, style, "--timeout", "seconds",
         "give up waiting after this long (default: %(default)s)", type=int,
         default=DEFAULT_TIMEOUT)


def add_boot(parser, style):
    """``--flavor``, ``--network`` and the wait options of a command that boots a server."""
    _add(parser, style, "--flavor", "flavor", "flavor (name or ID; default: the smallest "
                                              "flavor that fits the base VM's min_ram and "
                                              "min_disk)")
    _add(parser, style, "--network", "network", "network (name or ID), or 'auto' or 'none' "
                                                "(default: %(default)s)", default="auto")
    add_wait(parser, style)


def add_handoff(parser, style):
    """Where a handoff goes (``--dest-cloud``, ``--dest-auth-url`` with credentials, or
    ``--residue``), the name there and the wait options."""
    where = parser.add_mutually_exclusive_group(required=True)
    for flag, word, text in HANDOFF_WHERE:
        _add(where, style, flag, word, text)
    for flag, word, text in HANDOFF_DEST:
        _add(parser, style, flag, word, text)
    parser.set_defaults(dest_password=os.environ.get("CLOUDLET_DEST_PASSWORD"))
    add_wait(parser, style, HANDOFF_WAIT_HELP)


def run_handoff(conn, args, progress_factory):
    """The handoff the options of ``add_handoff`` (and ``add_server``) ask for: a connection
    to the destination first (none for ``--residue``), then ``handoff.handoff``."""
    dest = None
    if args.residue is None:
        dest = handoff.connect_destination(args.dest_cloud, args.dest_auth_url,
                                           args.dest_username, args.dest_password,
                                           args.dest_project, args.dest_project_domain,
                                           args.dest_user_domain)
    return handoff.handoff(conn, args.server, dest, args.dest_vmname, args.residue,
                           args.wait, args.timeout, progress_factory)
