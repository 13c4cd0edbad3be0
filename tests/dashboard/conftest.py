"""Django for the panel's tests, configured only when this directory is collected.

pytest-django is configured late here (not in an ini file), so the rest of the test tree
never sees Django settings unless tests/dashboard is part of the run; Horizon's logging
config is not applied (see settings.py).
"""

import os

import django

SETTINGS = "tests.dashboard.settings"


def pytest_configure(config):
    # A non-root conftest's pytest_configure runs when the conftest is loaded, before
    # the test modules of this directory are imported (they import Horizon).
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    django.setup()

