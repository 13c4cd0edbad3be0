"""Django for the panel's tests, configured only when this directory is collected.

pytest-django is configured late here (not in an ini file), so the rest of the test tree
never sees Django settings unless tests/dashboard is part of the run; Horizon's logging
config is not applied (see settings.py).
"""

import importlib
import os

import django
import pytest

SETTINGS = "tests.dashboard.settings"


def pytest_configure(config):
    # A non-root conftest's pytest_configure runs when the conftest is loaded, before
    # the test modules of this directory are imported (they import Horizon).
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    django.setup()



# Horizon's test data replaces ``__init__`` and ``__str__`` of client exception classes
# for good (openstack_dashboard/test/test_data/exceptions.py); other tests in the same
# process then cannot build those exceptions. Put the originals back after each module.
_STUBBED = (("openstack.exceptions", "SDKException"),
            ("keystoneclient.exceptions", "Unauthorized"),
            ("keystoneclient.exceptions", "ClientException"),
            ("novaclient.exceptions", "ClientException"),
            ("novaclient.exceptions", "Unauthorized"),
            ("glanceclient.exc", "ClientException"),
            ("swiftclient.client", "ClientException"),
            ("cinderclient.exceptions", "BadRequest"))
_ATTRS = ("__init__", "__str__", "silence_logging")


@pytest.fixture(autouse=True, scope="module")
def restore_stubbed_exceptions():
    classes = [getattr(importlib.import_module(module), name) for module, name in _STUBBED]
    saved = [(cls, {a: cls.__dict__[a] for a in _ATTRS if a in cls.__dict__})
             for cls in classes]
    yield
    for cls, attrs in saved:
        for attr in _ATTRS:
            if attr in attrs:
                setattr(cls, attr, attrs[attr])
            elif attr in cls.__dict__:
                delattr(cls, attr)
