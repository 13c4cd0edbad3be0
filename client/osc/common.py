"""What every ``openstack cloudlet`` command shares: the connection, errors, options."""

from osc_lib import exceptions

from client import operations as ops
from cloudlet_compute.errors import CloudletError


class CloudletMixin:
    """``take_action`` through ``run``: engine and API errors become ``CommandError``s
    (one line, with the service's message; exit code 1 like any ``openstack`` command)."""

    @property
    def conn(self):
        return self.app.client_manager.cloudlet

    def take_action(self, parsed_args):
        try:
            return self.run_action(parsed_args)
        except CloudletError as exc:
            raise exceptions.CommandError(str(exc)) from exc

    def run_action(self, parsed_args):
        raise NotImplementedError


def as_show(result):
    """``(columns, values)`` of a dict, for ``ShowOne``."""
    return tuple(result), tuple(result.values())


def as_list(rows, columns):
    """``(headers, rows)`` for ``Lister``."""
    return (tuple(c.replace("_", " ").title() if c != "id" else "ID" for c in columns),
            [tuple(row.get(c) for c in columns) for row in rows])


def add_wait(parser, help_text="Wait until done, showing progress (Ctrl-C undoes it)"):
    parser.add_argument("--wait", action="store_true", help=help_text)
    parser.add_argument("--timeout", type=int, default=ops.DEFAULT_TIMEOUT,
                        metavar="<seconds>",
                        help="Give up waiting after this long (default: %(default)s)")


def add_boot(parser):
    parser.add_argument("--flavor", metavar="<flavor>",
                        help="Flavor (name or ID; default: the smallest flavor that fits "
                             "the base VM's min_ram and min_disk)")
    parser.add_argument("--network", metavar="<network>", default="auto",
                        help="Network (name or ID), or 'auto' or 'none' (default: auto)")
    add_wait(parser)
