"""The real test guests: the tiny one (see guest.py; ``stack/guest/build.sh OUTDIR``) and a
Debian 12 one (:mod:`stack.guest.debian`), both driven by :class:`GuestChannel`."""

from .guest import (  # noqa: F401
    CMD_SOCK,
    CONSOLE_LOG,
    GUEST_DIR,
    GuestChannel,
    GuestCommandError,
    GuestConnectionError,
    GuestError,
    GuestTimeoutError,
    Image,
    boot,
    console_tail,
    destroy,
    domain_xml,
    ensure_built,
    tiny_with_blocks,
)

__all__ = [
    "CMD_SOCK", "CONSOLE_LOG", "GUEST_DIR", "GuestChannel", "GuestCommandError",
    "GuestConnectionError", "GuestError", "GuestTimeoutError", "Image", "boot", "console_tail",
    "destroy", "domain_xml", "ensure_built", "tiny_with_blocks",
]
