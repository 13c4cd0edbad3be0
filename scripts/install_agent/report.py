"""What the agent tells: progress lines, and the two ways it stops (exit 2 and exit 1)."""


class Refused(Exception):
    """A check failed before anything was changed: one line saying what is wrong."""


class Failed(Exception):
    """Something went wrong while changing the target."""


def log(msg):
    print("openstackpp: " + msg, flush=True)

