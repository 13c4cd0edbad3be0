"""Load nova's functional test package in native-threading mode, first thing.

Importing ``nova.tests.functional`` monkey-patches eventlet unless
OS_NOVA_DISABLE_EVENTLET_PATCHING is set; patching would change threads under every other
test in this pytest run (the engine's real-libvirt tests use threads and subprocesses).
In threading mode nova refuses to start if eventlet was imported before, and futurist
imports it when it can, so this must run before anything imports futurist. The variable
is restored afterwards so that processes started by other tests do not inherit it.
"""

import os

_saved = os.environ.get("OS_NOVA_DISABLE_EVENTLET_PATCHING")
os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = "1"
try:
    # Both packages call monkey_patch.patch() when first imported.
    import nova.tests.functional  # noqa: F401
    import nova.tests.unit  # noqa: F401
finally:
    if _saved is None:
        del os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"]
    else:
        os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = _saved
