"""Django settings for the panel's unit tests: Horizon's test settings plus the panel,
enabled from our own ``enabled/`` file (as manila-ui's tests/settings.py does)."""

from openstack_dashboard.test.settings import *  # noqa: F401,F403

import dashboard_panel.enabled
import openstack_dashboard.enabled
from openstack_dashboard.utils import settings as settings_utils

_apps = []
# A second pass over Horizon's own enabled files plus ours (Horizon's test settings did the
# first); the dashboards' order comes from the files again.
HORIZON_CONFIG.pop('dashboards', None)  # noqa: F405
settings_utils.update_dashboards([openstack_dashboard.enabled, dashboard_panel.enabled],
                                 HORIZON_CONFIG, _apps)  # noqa: F405
INSTALLED_APPS = list(INSTALLED_APPS) + [a for a in _apps if a not in INSTALLED_APPS]  # noqa: F405

# Horizon's LOGGING would be applied to the whole test process by django.setup()
# (dictConfig disables existing loggers): keep the process's logging as it is.
LOGGING_CONFIG = None

# Templates render their {% compress %} blocks as plain tags: nothing is written to disk.
COMPRESS_ENABLED = False
