"""``openstack cloudlet handoff``."""

import os

from osc_lib.command import command

from client import operations as ops
from client.osc import common


class HandoffServer(common.CloudletMixin, command.ShowOne):
    """Move a running server to another OpenStack++ cloud (VM handoff)

    With --residue instead of a destination, the server's current state becomes a VM
    overlay image in this cloud and the server keeps running.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("server", metavar="<server>", help="Server (name or ID)")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--dest-cloud", metavar="<cloud>",
                           help="Destination cloud in clouds.yaml")
        where.add_argument("--dest-auth-url", metavar="<auth-url>",
                           help="Destination Keystone (v3), with --dest-username, "
                                "--dest-password and --dest-project")
        where.add_argument("--residue", metavar="<name>",
                           help="No destination: store the server's current state as VM "
                                "overlay image <name> in this cloud (the server keeps "
                                "running)")
        parser.add_argument("--dest-username", metavar="<username>",
                            help="Destination user name")
        parser.add_argument("--dest-password", metavar="<password>",
                            default=os.environ.get("CLOUDLET_DEST_PASSWORD"),
                            help="Destination password (Env: CLOUDLET_DEST_PASSWORD)")
        parser.add_argument("--dest-project", metavar="<project>",
                            help="Destination project name")
        parser.add_argument("--dest-project-domain", metavar="<domain>",
                            help="Destination project domain name (default: Default)")
        parser.add_argument("--dest-user-domain", metavar="<domain>",
                            help="Destination user domain name (default: Default)")
        parser.add_argument("--dest-vmname", metavar="<name>",
                            help="Server name at the destination (default: the same name)")
        common.add_wait(parser, "Wait until the server runs at the destination (or the "
                                "residue image is active), showing progress; Ctrl-C stops "
                                "waiting, the handoff goes on")
        return parser

    def run_action(self, parsed_args):
        a = parsed_args
        dest = None
        if a.residue is None:
            dest = ops.connect_destination(a.dest_cloud, a.dest_auth_url, a.dest_username,
                                           a.dest_password, a.dest_project,
                                           a.dest_project_domain, a.dest_user_domain)
        return common.as_show(ops.handoff(self.conn, a.server, dest, a.dest_vmname,
                                          a.residue, a.wait, a.timeout, ops.progress_bar))
