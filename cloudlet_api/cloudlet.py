"""The ``os-cloudlet`` server actions: cloudlet-base, cloudlet-overlay-finish, cloudlet-handoff.

cloudlet-base and cloudlet-overlay-finish follow nova's snapshot pattern: check the state,
create the Glance records, move the instance's task_state to ``image_snapshot_pending``
(with an expected-state guard, so two requests cannot both win), then cast to the
instance's compute host and answer 202 with the image ids at once. nova-compute reports
progress through task_state and makes the images active when their data is uploaded.

cloudlet-handoff to an http(s) URL first asks the destination (with the user's token for
it) whether it holds the same base VM and a fitting flavor, so that a handoff that cannot
work is refused (400/409) before anything is created; then task_state ``migrating`` and a
cast. ``file://NAME`` makes the overlay image NAME of the server, as overlay-finish does.
"""

import contextlib

import webob
from oslo_log import log as logging
from oslo_utils import excutils

from nova.api.openstack import common
from nova.api.openstack import wsgi
from nova.api import validation
from nova.compute import api as compute
from nova.compute import task_states
from nova.compute import vm_states
from nova import exception
from nova.image import glance as nova_glance
from nova import objects

from cloudlet_api.policies import cloudlet as policies
from cloudlet_api.schemas import cloudlet as schema
from cloudlet_compute.nova import destination
from cloudlet_compute.nova import glance
from cloudlet_compute.nova import rpcapi

LOG = logging.getLogger(__name__)

ALIAS = 'os-cloudlet'
EXTENSION_INFO = {
    'alias': ALIAS,
    'description': 'Cloudlet support: base VMs, VM overlays, VM synthesis (OpenStack++).',
    'links': [],
    'name': 'Cloudlet',
    'namespace': 'https://openstackpp.org/compute/ext/cloudlet/api/v1',
    'updated': '2026-11-01T00:00:00Z',
}


def _check_idle_active(instance, action, server_id):
    """409 unless the instance is ACTIVE with no task running."""
    if instance.vm_state != vm_states.ACTIVE:
        attr, state = 'vm_state', instance.vm_state
    elif instance.task_state is not None:
        attr, state = 'task_state', instance.task_state
    else:
        return
    exc = exception.InstanceInvalidState(attr=attr, instance_uuid=instance.uuid,
                                         state=state, method=action)
    common.raise_http_conflict_for_instance_invalid_state(exc, action, server_id)


@validation.validated
class CloudletController(wsgi.Controller):
    """Server actions of the cloudlet extension (registered on the servers resource)."""

    def __init__(self):
        super().__init__()
        self.compute_api = compute.API()
        self.image_api = nova_glance.API()
        self.rpcapi = rpcapi.CloudletComputeAPI()

    def _get(self, context, server_id):
        return common.get_instance(self.compute_api, context, server_id,
                                   expected_attrs=['system_metadata'])

    def _idle_active(self, req, server_id, action, rule):
        """``(context, instance)`` for server action ``action``: 404 unless the server
        exists, 403 unless policy ``rule`` allows it, 409 unless it is ACTIVE and idle."""
        context = req.environ['nova.context']
        instance = self._get(context, server_id)
        policies.authorize(context, rule, instance)
        _check_idle_active(instance, action, server_id)
        return context, instance

    def _start_task(self, context, instance, image_ids, task_state):
        """Claim the instance for a cloudlet task (and forget why the last one failed);
        undo the records if that fails."""
        try:
            instance.task_state = task_state
            if glance.METADATA_TASK_ERROR in (instance.metadata or {}):
                instance.metadata = {k: v for k, v in instance.metadata.items()
                                     if k != glance.METADATA_TASK_ERROR}
            instance.save(expected_task_state=[None])
        except exception.UnexpectedTaskStateError as exc:
            glance.delete_records(context, self.image_api, image_ids)
            raise webob.exc.HTTPConflict(explanation=exc.format_message())
        except Exception:
            with excutils.save_and_reraise_exception():
                glance.delete_records(context, self.image_api, image_ids)

    def _cast_failed(self, context, instance, image_ids, task_state):
        """The cast did not leave: give the instance back and drop the records."""
        try:
            instance.task_state = None
            instance.save(expected_task_state=[task_state])
        except Exception as exc:
            LOG.warning("could not reset task_state: %s", exc, instance=instance)
        glance.delete_records(context, self.image_api, image_ids)

    @contextlib.contextmanager
    def _claimed(self, context, instance, image_ids, action,
                 task_state=task_states.IMAGE_SNAPSHOT_PENDING):
        """Claim the instance (``_start_task``) and record the instance action ``action``
        for the cast in the block; if the block raises, give the instance back and drop the
        records."""
        self._start_task(context, instance, image_ids, task_state)
        try:
            objects.InstanceAction.action_start(context, instance.uuid, action,
                                                want_result=False)
            yield
        except Exception:
            with excutils.save_and_reraise_exception():
                self._cast_failed(context, instance, image_ids, task_state)

    @wsgi.response(202)
    @wsgi.expected_errors((400, 403, 404, 409))
    @wsgi.action('cloudlet-base')
    @validation.schema(schema.cloudlet_base)
    @validation.response_body_schema(schema.cloudlet_base_response)
    def _cloudlet_base(self, req, id, body):
        """Snapshot a running server into a base VM: four linked Glance images."""
        context, instance = self._idle_active(req, id, 'cloudlet-base', 'base')
        name = body['cloudlet-base']['name']

        ids = glance.create_base_records(context, self.image_api, instance, name)
        with self._claimed(context, instance, ids.values(), 'cloudlet-base'):
            self.rpcapi.cloudlet_base(context, instance, ids)
        LOG.info("cloudlet-base %s requested: images %s", name, ids, instance=instance)
        return {glance.RESPONSE_KEYS[t]: image_id for t, image_id in ids.items()}

    @wsgi.response(202)
    @wsgi.expected_errors((400, 403, 404, 409))
    @wsgi.action('cloudlet-overlay-finish')
    @validation.schema(schema.cloudlet_overlay_finish)
    @validation.response_body_schema(schema.cloudlet_overlay_finish_response)
    def _cloudlet_overlay_finish(self, req, id, body):
        """Build the VM overlay of a server resumed from a base; upload it to Glance."""
        context, instance = self._idle_active(req, id, 'cloudlet-overlay-finish',
                                              'overlay_finish')
        name = body['cloudlet-overlay-finish']['overlay-name']
        return {'overlay-id': self._overlay(context, instance, id, name,
                                            'cloudlet-overlay-finish'),
                'overlay-name': name}

    def _overlay(self, context, instance, server_id, name, action):
        """Start building ``instance``'s VM overlay as image ``name`` (instance action
        ``action``); return the image id."""
        if glance.instance_base_id(instance) is None:
            raise webob.exc.HTTPConflict(explanation=(
                "Server %s was not created from a cloudlet base VM (its image is not a %s "
                "image), so it has no VM overlay" % (server_id, glance.BASE_DISK)))
        overlay_id = glance.create_overlay_record(context, self.image_api, instance, name)
        with self._claimed(context, instance, [overlay_id], action):
            self.rpcapi.cloudlet_overlay_finish(context, instance, name, overlay_id)
        LOG.info("VM overlay %s requested: image %s", name, overlay_id, instance=instance)
        return overlay_id

    @wsgi.response(202)
    @wsgi.expected_errors((400, 403, 404, 409))
    @wsgi.action('cloudlet-handoff')
    @validation.schema(schema.cloudlet_handoff)
    @validation.response_body_schema(schema.cloudlet_handoff_response)
    def _cloudlet_handoff(self, req, id, body):
        """VM handoff to another cloud's compute endpoint, or into Glance (``file://NAME``)."""
        context, instance = self._idle_active(req, id, 'cloudlet-handoff', 'handoff')
        args = body['cloudlet-handoff']
        url = args['handoff_url']
        if url.startswith('file://'):
            return {'handoff': self._overlay(context, instance, id, url[len('file://'):],
                                             'cloudlet-handoff')}
        if not args.get('dest_token'):
            raise webob.exc.HTTPBadRequest(
                explanation="cloudlet-handoff to an http(s) URL needs dest_token")
        base_id = glance.instance_base_id(instance)
        if base_id is None:
            raise webob.exc.HTTPConflict(explanation=(
                "Server %s was not created from a cloudlet base VM, so it cannot be handed "
                "off" % id))
        try:
            dest = destination.Destination(url, args['dest_token'])
            image_id = dest.find_base(base_id)
            flavor_id = dest.pick_flavor(instance.flavor)
        except destination.DestinationError as exc:
            error = webob.exc.HTTPBadRequest if exc.status == 400 else webob.exc.HTTPConflict
            raise error(explanation=str(exc))
        dest_name = args.get('dest_vmname') or instance.display_name
        instance.progress = 0   # the handoff's, from here on (saved with the task state)
        with self._claimed(context, instance, [], 'cloudlet-handoff',
                           task_state=task_states.MIGRATING):
            self.rpcapi.cloudlet_handoff(context, instance, dest.url, args['dest_token'],
                                         dest_name, image_id, flavor_id)
        LOG.info("cloudlet-handoff to %s requested (base image %s, flavor %s)", dest.url,
                 image_id, flavor_id, instance=instance)
        return {'handoff': dest.url}
