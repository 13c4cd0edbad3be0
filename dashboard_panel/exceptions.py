"""The plugin's one exception type (no imports: the ``enabled`` file names it in settings)."""


class CloudletAPIError(Exception):
    """A call to OpenStack or to an overlay URL failed; ``str(err)`` is the reason, fit
    for a Horizon message. Registered as recoverable, so ``exceptions.handle`` shows it."""
