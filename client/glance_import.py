"""The base package import under its former module name, for code that still imports
``client.glance_import`` (``tests/support``, ``tests/conftest.py``, ``tests/e2e``). The
import itself is ``client.core.bases.import_base_package``; this module holds no logic."""

from client.core.bases import import_base_package
from client.core.waiting import wait_image_active as wait_active

__all__ = ["import_base_package", "wait_active"]
