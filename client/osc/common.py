"""What every ``openstack cloudlet`` command shares: the connection, errors, output. The
options are ``client.core.options`` (in the ``OSC`` style)."""

from osc_lib import exceptions

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
