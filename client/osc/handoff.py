"""``openstack cloudlet handoff``."""

from osc_lib.command import command

from client.core import options
from client.core.options import OSC
from client.core.waiting import progress_bar
from client.osc import common


class HandoffServer(common.CloudletMixin, command.ShowOne):
    """Move a running server to another OpenStack++ cloud (VM handoff)

    With --residue instead of a destination, the server's current state becomes a VM
    overlay image in this cloud and the server keeps running.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        options.add_server(parser, OSC)
        options.add_handoff(parser, OSC)
        return parser

    def run_action(self, parsed_args):
        return common.as_show(options.run_handoff(self.conn, parsed_args, progress_bar))
