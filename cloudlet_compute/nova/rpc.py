"""The ``cloudlet`` RPC namespace served by stock nova-compute.

CloudletDriver appends :class:`CloudletEndpoint` to the compute manager's
``additional_endpoints`` while nova builds the manager; ``Service.start()`` then serves it
on the host's ``compute`` queue. The client is ``cloudlet_compute.nova.rpcapi``.

Task states, as nova's snapshot uses them: the API sets ``image_snapshot_pending``; here
``image_pending_upload`` while the engine works, ``image_uploading`` while Glance receives
the data, then None. On failure the task state is reverted, an instance fault records
why, and the queued Glance records are deleted.

A handoff runs under task_state ``migrating`` with the server's ``progress`` rising. After
success the source server is deleted.

Each action's instance action (``cloudlet-base``, ``cloudlet-overlay-finish``,
``cloudlet-handoff``, recorded by the API) gets its ``compute_...`` event, whose details
say why it failed; nova shows those to admins only and instance faults only of ERROR
servers, so the reason also goes into the server's metadata ``cloudlet_error`` (one line;
the API clears it when the next action begins).
"""

import contextlib

import oslo_messaging as messaging
from oslo_log import log as logging
from oslo_utils import excutils

from nova.compute import api as compute_api
from nova.compute import manager as compute_manager
from nova.compute import task_states
from nova.compute import utils as compute_utils
from nova.image import glance as nova_glance

from cloudlet_compute.nova import glance
from cloudlet_compute.nova import rpcapi

LOG = logging.getLogger(__name__)


class CloudletEndpoint:
    """RPC methods of the ``cloudlet`` namespace (version ``rpcapi.VERSION``)."""

    target = messaging.Target(namespace=rpcapi.NAMESPACE, version=rpcapi.VERSION)

    def __init__(self, manager, driver):
        self.manager = manager
        self.driver = driver
        self.image_api = nova_glance.API()

    # reverts_task_state calls this on failure.
    def _instance_update(self, context, instance, **kwargs):
        return self.manager._instance_update(context, instance, **kwargs)

    def _task_state_updater(self, instance):
        def update(task_state, expected_state):
            instance.task_state = task_state
            instance.save(expected_task_state=[expected_state])
        return update

    def _delete_images(self, context, image_ids):
        glance.delete_records(context, self.image_api, image_ids)

    @compute_manager.reverts_task_state
    @compute_utils.wrap_instance_event(prefix='compute')
    @compute_manager.wrap_instance_fault
    def cloudlet_base(self, context, instance, image_ids):
        """Snapshot ``instance`` into a base VM and upload it to ``image_ids``."""
        context = context.elevated()
        LOG.info("creating cloudlet base VM", instance=instance)
        try:
            with _reason_kept(instance):
                self.driver.cloudlet_base(context, instance, image_ids,
                                          self._task_state_updater(instance))
        except Exception:
            with excutils.save_and_reraise_exception():
                self._delete_images(context, image_ids.values())
        instance.task_state = None
        instance.save(expected_task_state=[task_states.IMAGE_UPLOADING])
        LOG.info("cloudlet base VM uploaded: %s", image_ids, instance=instance)

    @compute_manager.reverts_task_state
    @compute_utils.wrap_instance_event(prefix='compute')
    @compute_manager.wrap_instance_fault
    def cloudlet_overlay_finish(self, context, instance, overlay_name, overlay_id):
        """Build ``instance``'s VM overlay and upload it to image ``overlay_id``."""
        context = context.elevated()
        LOG.info("creating VM overlay %s", overlay_name, instance=instance)
        try:
            with _reason_kept(instance):
                self.driver.cloudlet_overlay_finish(context, instance, overlay_id,
                                                    self._task_state_updater(instance))
        except Exception:
            with excutils.save_and_reraise_exception():
                self._delete_images(context, [overlay_id])
        instance.task_state = None
        instance.save(expected_task_state=[task_states.IMAGE_UPLOADING])
        LOG.info("VM overlay %s uploaded as image %s", overlay_name, overlay_id,
                 instance=instance)

    @compute_manager.reverts_task_state
    @compute_utils.wrap_instance_event(prefix='compute')
    @compute_manager.wrap_instance_fault
    def cloudlet_handoff(self, context, instance, handoff_url, dest_token, dest_vmname,
                         dest_image_id, dest_flavor_id):
        """Hand ``instance`` off to another cloud; delete it here once it runs there."""
        LOG.info("handing off to %s as %s", handoff_url, dest_vmname, instance=instance)

        def progress(percent):
            instance.progress = percent
            instance.save(expected_task_state=[task_states.MIGRATING])

        with _reason_kept(instance):
            dest_id = self.driver.cloudlet_handoff(context, instance, handoff_url, dest_token,
                                                   dest_vmname, dest_image_id, dest_flavor_id,
                                                   progress)
        LOG.info("handed off to server %s at %s; deleting it here", dest_id, handoff_url,
                 instance=instance)
        instance.task_state = None
        instance.progress = 100
        instance.save(expected_task_state=[task_states.MIGRATING])
        compute_api.API().delete(context, instance)


@contextlib.contextmanager
def _reason_kept(instance):
    """On failure, the reason in ``instance``'s metadata ``cloudlet_error``, where its users
    see it: the message of the instance fault nova records (one line, at most 255
    characters; an error that is not nova's is named by its class, as in faults)."""
    try:
        yield
    except Exception as exc:
        with excutils.save_and_reraise_exception():
            reason = compute_utils.exception_to_dict(exc)['message']
            instance.metadata = dict(instance.metadata or {},
                                     **{glance.METADATA_TASK_ERROR: reason})
            try:
                instance.save()
            except Exception as save_exc:   # e.g. deleted meanwhile: the first error matters
                LOG.warning("could not record why the task failed: %s", save_exc,
                            instance=instance)


def register(virtapi, driver):
    """Append the endpoint to the manager behind ``virtapi`` (nova's ComputeVirtAPI).

    Returns the endpoint, or None when the driver is not loaded by a compute manager
    (for example by a tool that only inspects it).
    """
    manager = getattr(virtapi, '_compute', None)
    if manager is None or not hasattr(manager, 'additional_endpoints'):
        LOG.warning("CloudletDriver is not loaded by nova-compute's manager: the "
                    "cloudlet RPC endpoint is not served")
        return None
    endpoint = CloudletEndpoint(manager, driver)
    manager.additional_endpoints.append(endpoint)
    return endpoint


