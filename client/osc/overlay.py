"""``openstack cloudlet overlay create|list|download``."""

from osc_lib.command import command

from client import operations as ops
from client.osc import common

OVERLAY_COLUMNS = ("id", "name", "status", "size", "base_id")


class CreateOverlay(common.CloudletMixin, command.ShowOne):
    """Build the VM overlay of a server resumed from a base VM"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("server", metavar="<server>", help="Server (name or ID)")
        parser.add_argument("name", metavar="<name>", help="Overlay image name")
        common.add_wait(parser)
        return parser

    def run_action(self, parsed_args):
        return common.as_show(ops.create_overlay(self.conn, parsed_args.server,
                                                 parsed_args.name, parsed_args.wait,
                                                 parsed_args.timeout))


class ListOverlay(common.CloudletMixin, command.Lister):
    """List VM overlay images"""

    def run_action(self, parsed_args):
        return common.as_list(ops.list_overlays(self.conn), OVERLAY_COLUMNS)


class DownloadOverlay(common.CloudletMixin, command.ShowOne):
    """Save a VM overlay image as a file"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("overlay", metavar="<overlay>", help="Overlay image (name or ID)")
        parser.add_argument("file", metavar="<file>", help="File to write")
        return parser

    def run_action(self, parsed_args):
        return common.as_show(ops.download(self.conn, parsed_args.overlay, parsed_args.file,
                                           ops.progress_bar))
