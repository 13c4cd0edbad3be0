"""openstackclient plugin hooks for ``openstack cloudlet ...``.

The commands (``openstack.cloudlet.v1`` entry points) reach the cloud through OSC's own
openstacksdk connection, so ``--os-cloud``, ``OS_*`` variables, ``--debug`` and the output
formatters behave as for every other ``openstack`` command.
"""

import logging

from osc_lib import utils

LOG = logging.getLogger(__name__)

DEFAULT_API_VERSION = "1"
API_VERSION_OPTION = "os_cloudlet_api_version"
API_NAME = "cloudlet"
API_VERSIONS = {"1": "client.core"}


def make_client(instance):
    """The client the commands get as ``client_manager.cloudlet``: OSC's SDK connection,
    which every ``client.core`` function takes as its first argument."""
    LOG.debug("cloudlet client: openstacksdk connection %s", instance.sdk_connection)
    return instance.sdk_connection


def build_option_parser(parser):
    """Add ``--os-cloudlet-api-version`` to the global options."""
    parser.add_argument(
        "--os-cloudlet-api-version",
        metavar="<cloudlet-api-version>",
        default=utils.env("OS_CLOUDLET_API_VERSION", default=DEFAULT_API_VERSION),
        help="Cloudlet API version, default=%s (Env: OS_CLOUDLET_API_VERSION)"
             % DEFAULT_API_VERSION)
    return parser
