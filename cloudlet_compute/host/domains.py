"""libvirt operations the engine needs: look up, restore, destroy domains, hot-plug devices."""

import contextlib
import logging
import os

import libvirt

from cloudlet_compute.errors import ConflictError, HypervisorError, NotFoundError

LOG = logging.getLogger(__name__)
DEFAULT_URI = "qemu:///system"


def _quiet(_ctx, _err):
    """Keep libvirt from printing errors to stderr; we raise them instead."""


libvirt.registerErrorHandler(_quiet, None)


def connect(uri=None):
    """Open a libvirt connection (``$LIBVIRT_DEFAULT_URI`` or qemu:///system)."""
    uri = uri or os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HypervisorError("cannot connect to libvirt at %s: %s"
                              % (uri, exc.get_error_message())) from None


def lookup(conn, name):
    """Return the domain called ``name``; raise ``NotFoundError`` if there is none."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFoundError("no libvirt domain named %r" % name) from None
        raise HypervisorError("libvirt lookup of %r failed: %s"
                              % (name, exc.get_error_message())) from None


def ensure_free(conn, name):
    """Raise ``ConflictError`` if a domain called ``name`` exists."""
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return
        raise HypervisorError("libvirt lookup of %r failed: %s"
                              % (name, exc.get_error_message())) from None
    raise ConflictError("a domain named %r already exists" % name)


def restore(conn, path, xml=None, paused=False):
    """Start a domain from the save image at ``path``, running (or paused)."""
    flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
    try:
        conn.restoreFlags(path, xml, flags)
    except libvirt.libvirtError as exc:
        raise HypervisorError("restoring %s failed: %s" % (path, exc.get_error_message())) from None


def destroy(conn, name):
    """Stop and forget the domain ``name`` if it exists (best effort, for cleanups)."""
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByName(name)
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()


def _affect(live, config):
    flags = 0
    if live:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    if config:
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    return flags


def attach_device(dom, device_xml, live=True, config=False):
    """Hot-plug the device described by ``device_xml`` (``<interface>``, ``<disk>``...) into
    ``dom``: into the running domain (``live``) and/or its persistent definition
    (``config``). A paused domain takes the device too; the guest sees it when it runs."""
    try:
        dom.attachDeviceFlags(device_xml, _affect(live, config))
    except libvirt.libvirtError as exc:
        raise HypervisorError("attaching a device to %s failed: %s"
                              % (dom.name(), exc.get_error_message())) from None


def detach_device_alias(dom, alias, live=True, config=False):
    """Ask for the removal of ``dom``'s device called ``alias`` (a user alias ``ua-...`` to
    reach the persistent definition too). Asynchronous: it returns once the unplug request is
    sent; the guest completes a live removal when it runs (a paused guest later)."""
    try:
        dom.detachDeviceAlias(alias, _affect(live, config))
    except libvirt.libvirtError as exc:
        raise HypervisorError("detaching device %s from %s failed: %s"
                              % (alias, dom.name(), exc.get_error_message())) from None
