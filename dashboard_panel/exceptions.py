"""The plugin's two exception types (no imports: the ``enabled`` file names them in settings)."""


class CloudletAPIError(Exception):
    """A call to OpenStack or to an overlay URL failed; ``str(err)`` is the reason, fit
    for a Horizon message. Registered as recoverable, so ``exceptions.handle`` shows it."""


class CloudletNotFound(CloudletAPIError):
    """The object is gone (a server deleted, e.g. by a finished VM handoff). Registered as
    not_found as well: a table row whose object is gone is removed by Horizon."""
