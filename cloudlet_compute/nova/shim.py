"""Make ``compute_driver = cloudlet.CloudletDriver`` loadable by stock nova-compute.

nova's ``load_compute_driver`` imports ``nova.virt.<compute_driver>``, so the driver must
be reachable as ``nova.virt.cloudlet.CloudletDriver``. Two ways, both only re-exporting
:class:`cloudlet_compute.nova.driver.CloudletDriver`:

* ``python -m cloudlet_compute.nova.shim install`` writes the one-line package
  ``<site-packages>/nova/virt/cloudlet/__init__.py`` (``SHIM_SOURCE``); ``uninstall``
  removes it, ``check`` exits 1 unless it is installed and current. This is what a
  deployment uses: stock ``nova-compute`` then loads the driver with no wrapper.
* :func:`alias` puts the same module into ``sys.modules`` for the running process
  (tests, or a launcher that imports ``nova.cmd.compute`` first and calls it).

Nothing else is ever written into nova's tree.
"""

import importlib.util
import os
import sys
import types

SHIM_NAME = 'nova.virt.cloudlet'
DRIVER = 'cloudlet.CloudletDriver'
SHIM_SOURCE = (
    '"""OpenStack++ shim (installed by cloudlet_compute.nova.shim): the driver lives in\n'
    'cloudlet_compute.nova.driver. compute_driver = cloudlet.CloudletDriver."""\n'
    'from cloudlet_compute.nova.driver import CloudletDriver  # noqa: F401\n')


def shim_path(virt_dir=None):
    """Where the shim module goes: ``<nova/virt>/cloudlet/__init__.py``."""
    if virt_dir is None:
        spec = importlib.util.find_spec('nova.virt')
        virt_dir = list(spec.submodule_search_locations)[0]
    return os.path.join(virt_dir, 'cloudlet', '__init__.py')


def install(virt_dir=None):
    """Write the shim (idempotent); return its path."""
    path = shim_path(virt_dir)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == SHIM_SOURCE:
                return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(SHIM_SOURCE)
    os.replace(tmp, path)
    return path


def uninstall(virt_dir=None):
    """Remove the shim package if it is ours; return whether something was removed."""
    path = shim_path(virt_dir)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        if f.read() != SHIM_SOURCE:
            raise RuntimeError("%s is not the OpenStack++ shim; not removing it" % path)
    os.unlink(path)
    cache = os.path.join(os.path.dirname(path), '__pycache__')
    if os.path.isdir(cache):
        for name in os.listdir(cache):
            os.unlink(os.path.join(cache, name))
        os.rmdir(cache)
    os.rmdir(os.path.dirname(path))
    return True


def is_installed(virt_dir=None):
    path = shim_path(virt_dir)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return f.read() == SHIM_SOURCE


def alias():
    """Make ``nova.virt.cloudlet`` importable in this process without touching files."""
    if SHIM_NAME in sys.modules:
        return sys.modules[SHIM_NAME]
    import nova.virt
    from cloudlet_compute.nova.driver import CloudletDriver
    module = types.ModuleType(SHIM_NAME, 'OpenStack++ driver alias (cloudlet_compute.nova.shim)')
    module.CloudletDriver = CloudletDriver
    sys.modules[SHIM_NAME] = module
    nova.virt.cloudlet = module
    return module


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv not in (['install'], ['uninstall'], ['check']):
        print("usage: python -m cloudlet_compute.nova.shim install|uninstall|check",
              file=sys.stderr)
        return 2
    if argv[0] == 'install':
        print(install())
    elif argv[0] == 'uninstall':
        print("removed" if uninstall() else "not installed")
    elif not is_installed():
        print("shim missing or stale at %s" % shim_path(), file=sys.stderr)
        return 1
    else:
        print("ok: %s (compute_driver = %s)" % (shim_path(), DRIVER))
    return 0


if __name__ == '__main__':
    sys.exit(main())
