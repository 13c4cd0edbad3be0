"""Engine exceptions: each one is its own user-facing message and exit code."""


class CloudletError(Exception):
    """Base of every error the engine reports to a user.

    ``str(err)`` is a one-line message naming what is wrong; ``exit_code`` is what the
    CLI exits with.
    """

    exit_code = 1

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


class FormatError(CloudletError):
    """Bytes read from outside do not follow the format they claim (corrupt, truncated)."""

    exit_code = 3


class IntegrityError(FormatError):
    """A hash or size check failed: the data is not what its producer described."""


class NotFoundError(CloudletError):
    """A base VM, domain or file named by the user does not exist."""

    exit_code = 4


class ConflictError(CloudletError):
    """The request clashes with existing state (name in use, wrong base, wrong state)."""

    exit_code = 5


class FetchError(CloudletError):
    """An overlay could not be fetched (unreachable URL, HTTP error, dropped connection)."""

    exit_code = 6


class HypervisorError(CloudletError):
    """libvirt, QEMU or qemu-img failed."""

    exit_code = 7
