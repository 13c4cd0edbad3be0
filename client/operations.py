"""The client core's operations under their former module name, for code that still imports
``client.operations`` (``tests/e2e``, ``tests/compute``). New code imports ``client.core.*``;
this module holds no logic, only names (settings such as ``POLL_INTERVAL`` live in
``client.core.waiting``)."""

from client.core.bases import create_base, export_base, import_base, list_bases, resume_base
from client.core.errors import ApiError, AuthError, UsageError, api_errors, translate
from client.core.handoff import (HANDOFF_ACTION, HANDOFF_FROM, connect_destination,
                                 destination_endpoint, find_handoff_server, handoff,
                                 handoff_failure, wait_handoff)
from client.core.lookups import find_image, find_server, list_extensions, pick_flavor
from client.core.overlays import create_overlay, download, list_overlays
from client.core.sessions import connect, server_action
from client.core.synthesis import synthesis
from client.core.waiting import progress_bar, wait_server_active, wait_task

__all__ = ["ApiError", "AuthError", "HANDOFF_ACTION", "HANDOFF_FROM", "UsageError",
           "api_errors", "connect", "connect_destination", "create_base", "create_overlay",
           "destination_endpoint", "download", "export_base", "find_handoff_server",
           "find_image", "find_server", "handoff", "handoff_failure", "import_base",
           "list_bases", "list_extensions", "list_overlays", "pick_flavor", "progress_bar",
           "resume_base", "server_action", "synthesis", "translate", "wait_handoff",
           "wait_server_active", "wait_task"]
