"""What a nova-compute killed mid-operation left behind, cleared when it starts again.

``recover`` runs in the driver's ``init_host``, before nova's own start-up handling of the
host's instances; no cloudlet operation runs on this host at that moment, so:

- every entry of the cache's ``tmp/`` is scratch of the previous process: removed;
- a qemu-nbd serving a file under the instances path or the cache is an orphan: stopped;
- a server still BUILDING here was being spawned: its half-made domain is destroyed and an
  instance fault says why (nova then sets the server to ERROR);
- a running server with a snapshot task state was being captured (VM overlay or base VM):
  a guest the capture left paused runs again, and its cloudlet image records that never
  got their data are deleted (nova then clears the task state).

Each step is best effort: a failure is logged and never stops nova-compute from starting.
"""

import os
import shutil
import signal
import time

from oslo_log import log as logging

from nova.compute import power_state
from nova.compute import task_states
from nova.compute import utils as compute_utils
from nova.compute import vm_states
from nova import context as nova_context
from nova import exception
from nova import objects
from nova import service_auth

from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova import glance
from cloudlet_compute.nova.exception import CloudletBuildInterrupted

LOG = logging.getLogger(__name__)

CAPTURE_STATES = (task_states.IMAGE_SNAPSHOT_PENDING, task_states.IMAGE_PENDING_UPLOAD,
                  task_states.IMAGE_UPLOADING)
UNFINISHED_IMAGE = ('queued', 'saving', 'uploading', 'importing')


def clear_scratch(tmp_dir):
    """Remove every entry of ``tmp_dir``; return their names."""
    names = sorted(os.listdir(tmp_dir)) if os.path.isdir(tmp_dir) else []
    for name in names:
        path = os.path.join(tmp_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    return names


def orphan_nbd_pids(roots, proc='/proc'):
    """PIDs of the qemu-nbd processes with an argument under one of ``roots``."""
    roots = [os.path.join(os.path.abspath(r), '') for r in roots if r]
    pids = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, 'cmdline'), 'rb') as f:
                argv = f.read().decode(errors='replace').split('\0')
        except OSError:
            continue
        if os.path.basename(argv[0]) == 'qemu-nbd' and any(
                arg.startswith(root) for arg in argv[1:] for root in roots):
            pids.append(int(entry))
    return pids


def stop_pids(pids, timeout=5.0):
    """SIGTERM ``pids``, then SIGKILL those still there after ``timeout`` s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except OSError:
        return False


def _service_context():
    """A context authenticated as nova's ``[service_user]`` (None if not configured):
    init_host has no user whose token could delete the user's records."""
    auth = service_auth.get_service_auth_plugin('service_user')
    if auth is None:
        return None
    context = nova_context.get_admin_context()
    context.user_auth_plugin = auth
    return context


def delete_unfinished_images(context, image_api, instance_uuid):
    """Delete the cloudlet image records of ``instance_uuid`` that never became active;
    return their ids."""
    images = image_api.get_all(context, filters={
        'instance_uuid': instance_uuid, glance.PROPERTY_CLOUDLET: 'True',
        'visibility': 'all'})
    ids = [i['id'] for i in images if i.get('status') in UNFINISHED_IMAGE]
    glance.delete_records(context, image_api, ids)
    return ids


def _step(what, instance, func, *args):
    try:
        return func(*args)
    except Exception as exc:  # best effort: nova-compute must start
        LOG.warning("cloudlet recovery: %s failed: %s", what, exc, instance=instance)
        return None


def recover(host, store, instances_path, libvirt_host, image_api):
    """Clear what an interrupted nova-compute left on ``host`` (see the module doc)."""
    removed = _step("clearing the scratch directory", None, clear_scratch, store.tmp_dir)
    if removed:
        LOG.info("cloudlet recovery: removed scratch %s", ", ".join(removed))
    pids = _step("looking for qemu-nbd orphans", None, orphan_nbd_pids,
                 [instances_path, store.home]) or []
    if pids:
        LOG.info("cloudlet recovery: stopping orphan qemu-nbd %s", pids)
        _step("stopping qemu-nbd orphans", None, stop_pids, pids)
    context = nova_context.get_admin_context()
    instances = _step("listing the host's instances", None, objects.InstanceList.get_by_host,
                      context, host) or []
    service = None
    for instance in instances:
        if instance.host != host:
            continue
        if instance.vm_state == vm_states.BUILDING:
            _step("ending an interrupted build", instance, _end_build, context, instance,
                  libvirt_host)
        elif instance.vm_state == vm_states.ACTIVE and instance.task_state in CAPTURE_STATES:
            _step("resuming an interrupted capture", instance, _resume_capture, instance,
                  libvirt_host)
            service = service or _step("authenticating to Glance", None, _service_context)
            if service is not None:
                ids = _step("deleting unfinished images", instance,
                            delete_unfinished_images, service, image_api, instance.uuid)
                if ids:
                    LOG.info("cloudlet recovery: deleted unfinished images %s", ids,
                             instance=instance)


def _end_build(context, instance, libvirt_host):
    try:
        guest = libvirt_host.get_guest(instance)
    except exception.InstanceNotFound:
        guest = None
    if guest is not None:
        LOG.info("cloudlet recovery: destroying the domain of an interrupted build",
                 instance=instance)
        engine_adapter.discard_domain(libvirt_host.get_connection(), guest.name)
    fault = CloudletBuildInterrupted()
    compute_utils.add_instance_fault_from_exc(context, instance, fault)


def _resume_capture(instance, libvirt_host):
    try:
        guest = libvirt_host.get_guest(instance)
    except exception.InstanceNotFound:
        return
    if guest.get_power_state(libvirt_host) == power_state.PAUSED and \
            engine_adapter.restored_base_id(guest.get_xml_desc()):
        LOG.info("cloudlet recovery: resuming a guest an interrupted capture left paused",
                 instance=instance)
        guest.resume()
