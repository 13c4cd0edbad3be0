"""Policy defaults for the ``os-cloudlet`` server actions and ``GET /os-cloudlet-bases``.

Nova's enforcer only knows the rules nova registers itself, so :func:`register` adds ours
to it the first time an action is authorized (and again after the enforcer is reset).
"""

import nova.policy
from nova.policies import base
from oslo_log import log as logging
from oslo_policy import policy

LOG = logging.getLogger(__name__)

POLICY_ROOT = 'os_compute_api:os-cloudlet:%s'

cloudlet_policies = [
    policy.DocumentedRuleDefault(
        name=POLICY_ROOT % 'base',
        check_str=base.PROJECT_MEMBER_OR_ADMIN,
        description="Snapshot a running server into a cloudlet base VM (four linked "
                    "Glance images: disk, memory, disk hash list, memory hash list)",
        operations=[{'method': 'POST',
                     'path': '/servers/{server_id}/action (cloudlet-base)'}],
        scope_types=['project']),
    policy.DocumentedRuleDefault(
        name=POLICY_ROOT % 'overlay_finish',
        check_str=base.PROJECT_MEMBER_OR_ADMIN,
        description="Build the VM overlay of a server resumed from a cloudlet base VM and "
                    "upload it to Glance",
        operations=[{'method': 'POST',
                     'path': '/servers/{server_id}/action (cloudlet-overlay-finish)'}],
        scope_types=['project']),
    policy.DocumentedRuleDefault(
        name=POLICY_ROOT % 'handoff',
        check_str=base.PROJECT_MEMBER_OR_ADMIN,
        description="Hand a server created from a cloudlet base VM off to another cloudlet "
                    "(handoff_url: the destination's compute endpoint), or save its VM "
                    "overlay as a Glance image (handoff_url file://NAME)",
        operations=[{'method': 'POST',
                     'path': '/servers/{server_id}/action (cloudlet-handoff)'}],
        scope_types=['project']),
    policy.DocumentedRuleDefault(
        name=POLICY_ROOT % 'hosts',
        check_str=base.ADMIN,
        description="List the cloudlet base VMs each compute host caches (from the compute "
                    "nodes' stats)",
        operations=[{'method': 'GET', 'path': '/os-cloudlet-bases'}],
        scope_types=['project']),
]


def list_rules():
    return cloudlet_policies


def register():
    """Register our defaults with nova's policy enforcer unless it has them already."""
    nova.policy.init()
    # NOTE: nova exposes no public accessor that does not re-parse CONF (get_enforcer()
    # does); the contract test pins this attribute.
    enforcer = nova.policy._ENFORCER
    missing = [r for r in cloudlet_policies if r.name not in enforcer.registered_rules]
    if missing:
        enforcer.register_defaults(missing)
        LOG.debug("registered %d cloudlet policy defaults", len(missing))


def authorize(context, action, instance=None):
    """``context.can`` on ``os_compute_api:os-cloudlet:<action>`` for ``instance`` (or for
    no one's resource)."""
    register()
    target = {} if instance is None else {'user_id': instance.user_id,
                                          'project_id': instance.project_id}
    context.can(POLICY_ROOT % action, target=target)
