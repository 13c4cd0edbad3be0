"""``openstack cloudlet base import|export|list|create|resume|cache|hosts``."""

from osc_lib.command import command

from client.core import bases, options
from client.core.options import OSC
from client.core.waiting import progress_bar
from client.osc import common
from cloudlet_compute import imagemodel as model

BASE_COLUMNS = ("id", "name", "base_id", "status", "min_ram", "min_disk")


class ImportBase(common.CloudletMixin, command.ShowOne):
    """Upload a base package (``cloudlet base export``) as four linked images"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("package", metavar="<package.zip>", help="Base package file")
        options.add_name(parser, OSC, "image name prefix")
        parser.add_argument("--public", action="store_true",
                            help="Make the images public (admin only)")
        return parser

    def run_action(self, parsed_args):
        ids = bases.import_base(self.conn, parsed_args.package, parsed_args.name,
                                "public" if parsed_args.public else "private",
                                progress_bar("uploading", None))
        return common.as_show({model.IMPORT_KEYS[t]: i for t, i in ids.items()})


class ExportBase(common.CloudletMixin, command.ShowOne):
    """Download a base VM as a base package"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        options.add_base_ref(parser, OSC, "base")
        parser.add_argument("package", metavar="<package.zip>", help="File to write")
        return parser

    def run_action(self, parsed_args):
        return common.as_show(bases.export_base(self.conn, parsed_args.base,
                                                parsed_args.package, progress_bar))


class ListBase(common.CloudletMixin, command.Lister):
    """List base VMs (their disk images)"""

    def run_action(self, parsed_args):
        return common.as_list(bases.list_bases(self.conn), BASE_COLUMNS)


class CreateBase(common.CloudletMixin, command.ShowOne):
    """Snapshot a running server into a new base VM"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        options.add_server(parser, OSC)
        options.add_name(parser, OSC, "image name prefix")
        options.add_wait(parser, OSC)
        return parser

    def run_action(self, parsed_args):
        a = parsed_args
        return common.as_show(bases.create_base(self.conn, a.server, a.name, a.wait,
                                                a.timeout))


class ResumeBase(common.CloudletMixin, command.ShowOne):
    """Create a server from a base VM (memory restored, not booted)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        options.add_base_ref(parser, OSC, "base")
        options.add_name(parser, OSC, "new server name")
        options.add_boot(parser, OSC)
        return parser

    def run_action(self, parsed_args):
        a = parsed_args
        return common.as_show(bases.resume_base(self.conn, a.base, a.name, a.flavor,
                                                a.network, a.wait, a.timeout))


class CacheBase(common.CloudletMixin, command.ShowOne):
    """Pre-cache a base VM on the compute hosts of an aggregate (admin; nova's image cache)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        options.add_base_ref(parser, OSC, "base")
        options.add_aggregate(parser, OSC)
        return parser

    def run_action(self, parsed_args):
        return common.as_show(bases.cache_base(self.conn, parsed_args.base,
                                               parsed_args.aggregate,
                                               "openstack cloudlet base hosts"))


class ListBaseHosts(common.CloudletMixin, command.Lister):
    """List the base VMs each compute host caches (admin)"""

    def run_action(self, parsed_args):
        return common.as_list(bases.cached_bases(self.conn), bases.HOST_COLUMNS)
