"""The tiny real test guest (see guest.py): build it with ``stack/guest/build.sh OUTDIR``."""

from .guest import (  # noqa: F401
    CMD_SOCK,
    CONSOLE_LOG,
    GUEST_DIR,
    GuestChannel,
    GuestCommandError,
    GuestConnectionError,
    GuestError,
    GuestTimeoutError,
    boot,
    console_tail,
    destroy,
    domain_xml,
    ensure_built,
)

__all__ = [
    "CMD_SOCK", "CONSOLE_LOG", "GUEST_DIR", "GuestChannel", "GuestCommandError",
    "GuestConnectionError", "GuestError", "GuestTimeoutError", "boot", "console_tail",
    "destroy", "domain_xml", "ensure_built",
]
