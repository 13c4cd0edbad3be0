"""CloudletDriver: nova's LibvirtDriver plus resume-from-base, VM synthesis, overlays, handoff.

Thin on purpose: nova still builds the instance (disk over its cached copy of the image,
ports, console, XML); only the moment nova would *boot* the guest changes. When the image
is a cloudlet base disk, the driver restores the base's memory image into nova's domain
instead (resume base); when the server also carries ``overlay_url`` metadata, it runs VM
synthesis instead; with ``cloudlet_handoff_source`` metadata it fetches a handed-off VM
from the source compute node. Anything else is stock libvirt. The work itself is in the engine,
reached only through :mod:`cloudlet_compute.nova.engine_adapter`.

A resumed guest keeps its memory, so nothing is injected into it (no admin password, no
files; key injection is off by default in nova and stays so).
"""

import collections
import contextlib
import os
import shutil
import tempfile
from urllib import parse

from oslo_log import log as logging

import nova.conf
from nova.compute import task_states
from nova import exception
from nova.virt.libvirt import driver as libvirt_driver

from cloudlet_api import destination
from cloudlet_api import glance
from cloudlet_compute.errors import CloudletError, FetchError
from cloudlet_compute.nova import basecache
from cloudlet_compute.nova import conf as cloudlet_conf
from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova.exception import CloudletTaskFailed
from cloudlet_compute.nova import rpc

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
cloudlet_conf.register_opts(CONF)

RESUME = 'resume'
SYNTHESIS = 'synthesis'
HANDOFF = 'handoff'
WHAT = {RESUME: "resume of base VM", SYNTHESIS: "VM synthesis", HANDOFF: "VM handoff"}

# What spawn decided for one instance; _create_guest reads it while spawn runs.
SpawnPlan = collections.namedtuple(
    'SpawnPlan', 'mode base_id disk_image_id memory_image_id overlay_url handoff_source '
    'handoff_secret')


def spawn_plan(instance):
    """Return the SpawnPlan for ``instance``, or None for a stock libvirt boot.

    Nova copied the image's properties into system_metadata (``image_<key>``) when the
    server was created; the API's overlay_url is ordinary instance metadata.
    """
    sysmeta = instance.system_metadata or {}
    if sysmeta.get(glance.SYSMETA_PREFIX + glance.PROPERTY_TYPE) != glance.BASE_DISK:
        return None
    metadata = instance.metadata or {}
    overlay_url = metadata.get(glance.METADATA_OVERLAY_URL)
    handoff_source = metadata.get(glance.METADATA_HANDOFF_SOURCE)
    mode = HANDOFF if handoff_source else SYNTHESIS if overlay_url else RESUME
    return SpawnPlan(mode=mode,
                     base_id=sysmeta.get(glance.SYSMETA_PREFIX + glance.PROPERTY_BASE_ID),
                     disk_image_id=instance.image_ref,
                     memory_image_id=sysmeta.get(glance.SYSMETA_PREFIX + glance.BASE_MEMORY),
                     overlay_url=overlay_url, handoff_source=handoff_source,
                     handoff_secret=metadata.get(glance.METADATA_HANDOFF_SECRET))


class CloudletDriver(libvirt_driver.LibvirtDriver):
    """LibvirtDriver that resumes base VMs, synthesizes VMs and builds overlays."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        if not CONF.cloudlet.cache_dir:
            raise exception.InvalidConfiguration("[cloudlet] cache_dir must be set")
        bad = set(CONF.cloudlet.overlay_url_schemes) - {'http', 'https', 'file'}
        if bad:
            raise exception.InvalidConfiguration(
                "[cloudlet] overlay_url_schemes: unknown %s" % ", ".join(sorted(bad)))
        self.bases = basecache.BaseCache(CONF.cloudlet.cache_dir)
        self._spawn_plans = {}
        self._receptions = {}   # instance uuid -> handed-off VM waiting for nova's spawn
        self.rpc_endpoint = rpc.register(virtapi, self)

    # --- spawn: resume base / synthesis ----------------------------------------------
    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        plan = spawn_plan(instance)
        if plan is None:
            return super().spawn(context, instance, image_meta, injected_files,
                                 admin_password, allocations, network_info,
                                 block_device_info, power_on, accel_info)
        LOG.info("cloudlet spawn: %s from base %s", plan.mode, plan.base_id,
                 instance=instance)
        with self._build_errors(instance, plan):
            self._check_overlay_url(plan)
            if not plan.base_id:
                raise CloudletError("image %s has no %s property"
                                    % (plan.disk_image_id, glance.PROPERTY_BASE_ID))
            self.bases.ensure(context, plan.base_id, plan.disk_image_id,
                              plan.memory_image_id)
            if plan.mode == SYNTHESIS:
                needed = engine_adapter.overlay_base_id(self.bases.store, plan.overlay_url)
                if needed != plan.base_id:
                    raise CloudletError("the overlay at %s needs base VM %s, but the image "
                                        "is base VM %s" % (plan.overlay_url, needed,
                                                           plan.base_id))
        self._spawn_plans[instance.uuid] = plan
        try:
            # No injection into a guest whose memory is restored rather than booted.
            super().spawn(context, instance, image_meta, [], None, allocations,
                          network_info, block_device_info, power_on, accel_info)
        except Exception as exc:
            reception = self._receptions.pop(instance.uuid, None)
            if reception is not None:
                reception.failed(exc)
            raise
        finally:
            self._spawn_plans.pop(instance.uuid, None)
        reception = self._receptions.pop(instance.uuid, None)
        if reception is not None:
            # If the source does not hear this, it runs its copy again: fail ours then.
            with self._build_errors(instance, plan):
                reception.running()

    def _create_guest(self, context, xml, instance, power_on=True, pause=False,
                      post_xml_callback=None):
        plan = self._spawn_plans.get(instance.uuid)
        if plan is None:
            # Every other path (hard reboot, resize, rescue...) boots from disk as usual.
            return super()._create_guest(context, xml, instance, power_on=power_on,
                                         pause=pause, post_xml_callback=post_xml_callback)
        conn = self._host.get_connection()
        paused = pause or not power_on
        with self._build_errors(instance, plan):
            if plan.mode == RESUME:
                engine_adapter.resume_into(conn, self.bases.store, plan.base_id, xml,
                                           paused=paused)
            elif plan.mode == HANDOFF:
                self._receptions[instance.uuid] = engine_adapter.handoff_receive_into(
                    conn, self.bases.store, plan.handoff_source, plan.handoff_secret,
                    plan.base_id, xml, paused=paused)
            else:
                engine_adapter.synthesize_into(conn, self.bases.store, plan.overlay_url,
                                               plan.base_id, xml, paused=paused)
        LOG.info("cloudlet %s done", plan.mode, instance=instance)
        # As in nova's _create_guest: the callback (config drive) needs the domain defined.
        if post_xml_callback is not None:
            post_xml_callback()
        return self._host.get_guest(instance)

    def _check_overlay_url(self, plan):
        if plan.mode != SYNTHESIS:
            return
        scheme = parse.urlsplit(plan.overlay_url).scheme
        if scheme not in CONF.cloudlet.overlay_url_schemes:
            raise CloudletError("overlay_url scheme %r is not allowed here (allowed: %s)"
                                % (scheme, ", ".join(CONF.cloudlet.overlay_url_schemes)))

    @contextlib.contextmanager
    def _build_errors(self, instance, plan):
        """Any failure aborts the build (no reschedule: other hosts would not do better
        with the same image and overlay) with a readable reason as the instance fault."""
        try:
            yield
        except exception.BuildAbortException:
            raise
        except Exception as exc:
            what = WHAT[plan.mode]
            if isinstance(exc, FetchError) and plan.mode == SYNTHESIS:
                what += " (fetching %s)" % plan.overlay_url
            if isinstance(exc, exception.NovaException):
                reason = exc.format_message()
            elif isinstance(exc, CloudletError):
                reason = str(exc)
            else:
                LOG.exception("cloudlet %s failed", plan.mode, instance=instance)
                reason = "%s: %s" % (type(exc).__name__, exc)
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid, reason="%s failed: %s" % (what, reason)
            ) from exc

    # --- RPC work (called by CloudletEndpoint) ---------------------------------------
    def cloudlet_base(self, context, instance, image_ids, update_task_state):
        """Snapshot the running guest into a base VM; upload its four files."""
        guest = self._host.get_guest(instance)
        update_task_state(task_states.IMAGE_PENDING_UPLOAD,
                          task_states.IMAGE_SNAPSHOT_PENDING)
        with self._task_errors('cloudlet-base'):
            base = engine_adapter.create_base(self._host.get_connection(), self.bases.store,
                                              guest.name, instance.display_name or
                                              instance.uuid)
        update_task_state(task_states.IMAGE_UPLOADING, task_states.IMAGE_PENDING_UPLOAD)
        files = base.image_files()
        # The disk goes last: when it is active, the images it links are too.
        for image_type in glance.LINKED_TYPES + (glance.BASE_DISK,):
            glance.upload(context, self.bases.image_api, image_ids[image_type],
                          files[image_type], {glance.PROPERTY_BASE_ID: base.id})
        return base.id

    def cloudlet_overlay_finish(self, context, instance, overlay_id, update_task_state):
        """Build the guest's VM overlay and upload it as image ``overlay_id``."""
        guest = self._host.get_guest(instance)
        update_task_state(task_states.IMAGE_PENDING_UPLOAD,
                          task_states.IMAGE_SNAPSHOT_PENDING)
        work = tempfile.mkdtemp(prefix='overlay-', dir=self.bases.store.tmp_dir)
        try:
            path = os.path.join(work, 'overlay.zip')
            with self._task_errors('cloudlet-overlay-finish'):
                meta = engine_adapter.create_overlay(self._host.get_connection(),
                                                     self.bases.store, guest.name, path)
            update_task_state(task_states.IMAGE_UPLOADING, task_states.IMAGE_PENDING_UPLOAD)
            glance.upload(context, self.bases.image_api, overlay_id, path,
                          {glance.PROPERTY_BASE_ID: meta['base_vm_sha256']})
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def cloudlet_handoff(self, context, instance, handoff_url, dest_token, dest_vmname,
                         dest_image_id, dest_flavor_id, progress):
        """Create the destination server, hand the guest off to it; return its id.

        The destination server gets the listener's address and one-time secret in its
        metadata. On failure the guest runs here as before and the destination server,
        if one was made, is deleted.
        """
        guest = self._host.get_guest(instance)
        dest = destination.Destination(handoff_url, dest_token)
        dest_id = None
        reported = [0]

        def report(fraction):
            percent = int(fraction * 100)
            if percent >= reported[0] + 5:
                reported[0] = percent
                progress(percent)

        def check_destination():
            server = dest.server(dest_id)
            if server is None or server.get('status') == 'ERROR':
                fault = ((server or {}).get('fault') or {}).get('message') or 'deleted'
                raise CloudletError("the destination server %s failed: %s" % (dest_id, fault))

        with self._task_errors('cloudlet-handoff'):
            listener = engine_adapter.handoff_listener(CONF.cloudlet.handoff_host)
            try:
                dest_id = dest.create_server(dest_vmname, dest_image_id, dest_flavor_id, {
                    glance.METADATA_HANDOFF_SOURCE: listener.url,
                    glance.METADATA_HANDOFF_SECRET: listener.secret_text,
                    glance.METADATA_HANDOFF_FROM: instance.uuid})
                engine_adapter.handoff_send(self._host.get_connection(), self.bases.store,
                                            guest.name, listener, dest_id,
                                            CONF.cloudlet.handoff_wait, check_destination,
                                            report)
            except Exception as exc:
                listener.close()
                if dest_id:
                    dest.delete_server(dest_id)
                if isinstance(exc, destination.DestinationError):
                    raise CloudletError(str(exc)) from exc
                raise
        return dest_id

    @staticmethod
    @contextlib.contextmanager
    def _task_errors(task):
        try:
            yield
        except CloudletError as exc:
            raise CloudletTaskFailed(task=task, reason=str(exc)) from exc
