"""``openstack cloudlet synthesis``."""

from osc_lib.command import command

from client.core import options, synthesis
from client.core.options import OSC
from client.osc import common


class SynthesizeServer(common.CloudletMixin, command.ShowOne):
    """Create a server from a VM overlay (URL or Glance image) and its base VM (VM synthesis)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        options.add_overlay_source(parser, OSC)
        options.add_name(parser, OSC, "new server name")
        options.add_boot(parser, OSC)
        return parser

    def run_action(self, parsed_args):
        a = parsed_args
        return common.as_show(synthesis.synthesis(self.conn, a.overlay_url, a.name, a.flavor,
                                                  a.network, a.wait, a.timeout,
                                                  overlay_image=a.overlay_image))
