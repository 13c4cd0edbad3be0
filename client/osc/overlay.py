"""``openstack cloudlet overlay create|list|download``."""

from osc_lib.command import command

from client.core import options, overlays
from client.core.options import OSC
from client.core.waiting import progress_bar
from client.osc import common

OVERLAY_COLUMNS = ("id", "name", "status", "size", "base_id")


class CreateOverlay(common.CloudletMixin, command.ShowOne):
    """Build the VM overlay of a server resumed from a base VM"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        options.add_server(parser, OSC)
        options.add_name(parser, OSC, "overlay image name")
        options.add_wait(parser, OSC)
        return parser

    def run_action(self, parsed_args):
        a = parsed_args
        return common.as_show(overlays.create_overlay(self.conn, a.server, a.name, a.wait,
                                                      a.timeout))


class ListOverlay(common.CloudletMixin, command.Lister):
    """List VM overlay images"""

    def run_action(self, parsed_args):
        return common.as_list(overlays.list_overlays(self.conn), OVERLAY_COLUMNS)


class DownloadOverlay(common.CloudletMixin, command.ShowOne):
    """Save a VM overlay image as a file"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("overlay", metavar="<overlay>", help="Overlay image (name or ID)")
        parser.add_argument("file", metavar="<file>", help="File to write")
        return parser

    def run_action(self, parsed_args):
        return common.as_show(overlays.download(self.conn, parsed_args.overlay,
                                                parsed_args.file, progress_bar))
