"""oslo.policy defaults of the cloudlet API (``oslo.policy.policies`` entry point)."""

import itertools

from cloudlet_api.policies import cloudlet


def list_rules():
    return itertools.chain(cloudlet.list_rules())
