"""Same as tests/compute_nova/conftest.py: nova's test package in native-threading mode."""

from tests.compute_nova import conftest  # noqa: F401
