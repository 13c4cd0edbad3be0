"""gunicorn entry point for nova.wsgi.osapi_compute (configuration comes from the OS_*_CONFIG_* environment).

oslo.config would parse gunicorn's own command line: hide it before the import.
"""
import sys

sys.argv = sys.argv[:1]
from nova.wsgi.osapi_compute import application  # noqa: E402,F401
