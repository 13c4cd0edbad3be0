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

from oslo_log import log as logging

import nova.conf
from nova.compute import task_states
from nova import exception
from nova.virt.libvirt import driver as libvirt_driver

from cloudlet_compute.errors import CloudletError, FetchError
from cloudlet_compute.nova import basecache
from cloudlet_compute.nova import conf as cloudlet_conf
from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova.exception import CloudletTaskFailed
from cloudlet_compute.nova import glance
from cloudlet_compute.nova import handoff
from cloudlet_compute.nova import recovery
from cloudlet_compute.nova import rpc
from cloudlet_compute.nova import snapshots
from cloudlet_compute.nova import taps

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
cloudlet_conf.register_opts(CONF)

RESUME = 'resume'
SYNTHESIS = 'synthesis'
HANDOFF = 'handoff'
WHAT = {RESUME: "resume of base VM", SYNTHESIS: "VM synthesis", HANDOFF: "VM handoff"}

# What spawn decided for one instance; _create_guest reads it while spawn runs.
# ``overlay_image`` is Glance's record of ``overlay_image_id`` when spawn already has it
# (the booted image is the overlay: unshelve), else None.
SpawnPlan = collections.namedtuple(
    'SpawnPlan', 'mode base_id disk_image_id memory_image_id overlay_url overlay_image_id '
    'overlay_image handoff_source handoff_secret')


def spawn_plan(instance, image):
    """Return the SpawnPlan for ``instance`` booting ``image`` (Glance's record of the image
    nova boots, or None), or None for a stock libvirt boot.

    The image decides, not the instance's system metadata: a snapshot or unshelve boots
    another image than the one the server was created from. A base disk resumes the base
    (or synthesizes the overlay of ``overlay_url`` or ``overlay_image`` metadata, or receives
    a handoff); an overlay image (a shelved cloudlet server) is synthesized; anything else
    boots as nova does. A rebuild never receives a handoff again (that VM was received
    once, its source is gone): a handed-off server rebuilds as a resume of its base.
    """
    props = (image or {}).get('properties') or {}
    image_type = props.get(glance.PROPERTY_TYPE)
    metadata = instance.metadata or {}
    overlay_image = metadata.get(glance.METADATA_OVERLAY_IMAGE)
    if image_type == glance.OVERLAY:
        return SpawnPlan(mode=SYNTHESIS, base_id=props.get(glance.PROPERTY_BASE_ID),
                         disk_image_id=props.get(glance.BASE_DISK),
                         memory_image_id=props.get(glance.BASE_MEMORY), overlay_url=None,
                         overlay_image_id=image['id'], overlay_image=image,
                         handoff_source=None, handoff_secret=None)
    if image_type != glance.BASE_DISK:
        return None
    overlay_url = metadata.get(glance.METADATA_OVERLAY_URL)
    handoff_source = None if instance.task_state == task_states.REBUILD_SPAWNING else \
        metadata.get(glance.METADATA_HANDOFF_SOURCE)
    mode = HANDOFF if handoff_source else SYNTHESIS if overlay_url or overlay_image else RESUME
    return SpawnPlan(mode=mode, base_id=props.get(glance.PROPERTY_BASE_ID),
                     disk_image_id=image['id'], memory_image_id=props.get(glance.BASE_MEMORY),
                     overlay_url=overlay_url, overlay_image_id=overlay_image,
                     overlay_image=None, handoff_source=handoff_source,
                     handoff_secret=metadata.get(glance.METADATA_HANDOFF_SECRET))


def _overlay_name(plan):
    """How a fault names the overlay of a synthesis (never a path on this host)."""
    return plan.overlay_url or "image %s" % plan.overlay_image_id


def _progress_of(instance):
    """``progress(percent)`` that shows ``instance``'s build progress (its ``progress``)."""
    def progress(percent):
        instance.progress = percent
        instance.save()
    return progress


def _host_error(exc):
    """A failure of this host's file system (``OSError``) without the path it names."""
    return "%s on the compute node" % exc.strerror


class CloudletDriver(libvirt_driver.LibvirtDriver):
    """LibvirtDriver that resumes base VMs, synthesizes VMs and builds overlays."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        if not CONF.cloudlet.cache_dir:
            raise exception.InvalidConfiguration("[cloudlet] cache_dir must be set")
        try:
            self._url_policy = engine_adapter.OverlayURLPolicy.from_options(CONF.cloudlet)
        except ValueError as exc:
            raise exception.InvalidConfiguration("[cloudlet] %s" % exc) from None
        self._fetch_policy = self._url_policy.fetch
        self.bases = basecache.BaseCache(CONF.cloudlet.cache_dir, self._host.get_connection,
                                         max_bytes=CONF.cloudlet.base_cache_max_gb << 30)
        self._spawn_plans = {}
        self._receptions = {}   # instance uuid -> handed-off VM waiting for nova's spawn
        self._shelved = {}      # instance uuid -> (workdir, overlay, base id) being shelved
        self.rpc_endpoint = rpc.register(virtapi, self)

    def init_host(self, host):
        super().init_host(host)
        recovery.recover(host, self.bases.store, CONF.instances_path, self._host,
                         self._image_api)

    def get_available_resource(self, nodename):
        """nova's resources, with the cached base VMs in the stats (for CachedBaseWeigher)."""
        data = super().get_available_resource(nodename)
        data['stats'] = dict(data.get('stats') or {}, **self.bases.stats())
        return data

    def cache_image(self, context, image_id):
        """nova's image pre-caching (``POST /os-aggregates/{id}/images``): the image into
        nova's image cache; a base disk image first brings its whole base VM (disk, memory
        image, indexes) into the base cache. True if anything was fetched."""
        props = self._image_api.get(context, image_id).get('properties') or {}
        fetched = False
        if props.get(glance.PROPERTY_TYPE) == glance.BASE_DISK:
            if not props.get(glance.PROPERTY_BASE_ID):
                raise CloudletTaskFailed(task='pre-cache', reason="image %s has no %s "
                                         "property" % (image_id, glance.PROPERTY_BASE_ID))
            fetched = self.bases.precache(context, props[glance.PROPERTY_BASE_ID], image_id,
                                          props.get(glance.BASE_MEMORY))
        return super().cache_image(context, image_id) or fetched

    # --- spawn: resume base / synthesis ----------------------------------------------
    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        plan = spawn_plan(instance, self._booted_image(context, image_meta))
        if plan is None:
            return super().spawn(context, instance, image_meta, injected_files,
                                 admin_password, allocations, network_info,
                                 block_device_info, power_on, accel_info)
        LOG.info("cloudlet spawn: %s from base %s", plan.mode, plan.base_id,
                 instance=instance)
        work = None
        try:
            with self._build_errors(instance, plan):
                if plan.overlay_url:
                    self._url_policy.check_scheme(plan.overlay_url)
                if not plan.base_id:
                    raise CloudletError("image %s has no %s property"
                                        % (image_meta.id, glance.PROPERTY_BASE_ID))
                self.bases.ensure(context, instance.uuid, plan.base_id,
                                  plan.disk_image_id, plan.memory_image_id)
                location = plan.overlay_url
                if plan.overlay_image_id:
                    work = self.bases.store.scratch('overlay-image-')
                    location = os.path.join(work, 'overlay.zip')
                    self._download_overlay(context, plan, location)
                if plan.mode == SYNTHESIS:
                    needed = engine_adapter.overlay_base_id(
                        self.bases.store, location, plan.base_id, self._fetch_policy)
                    if needed != plan.base_id:
                        raise CloudletError("the overlay %s needs base VM %s, but the image "
                                            "is base VM %s" % (_overlay_name(plan), needed,
                                                               plan.base_id))
            self._spawn_plans[instance.uuid] = (plan, location)
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
            self.bases.release(instance.uuid)
            if work:
                shutil.rmtree(work, ignore_errors=True)
        reception = self._receptions.pop(instance.uuid, None)
        if reception is not None:
            # If the source does not hear this, it runs its copy again: fail ours then.
            with self._build_errors(instance, plan):
                reception.running()

    def _booted_image(self, context, image_meta):
        """Glance's record of the image nova boots (None for a volume-backed server)."""
        if not image_meta.obj_attr_is_set('id') or not image_meta.id:
            return None
        try:
            return self._image_api.get(context, image_meta.id)
        except exception.ImageNotFound:
            return None

    def _create_guest(self, context, xml, instance, power_on=True, pause=False,
                      post_xml_callback=None):
        guest = self._start_guest(context, xml, instance, power_on, pause, post_xml_callback)
        taps.settle(taps.ethernet_taps(xml))
        return guest

    def attach_interface(self, context, instance, image_meta, vif):
        super().attach_interface(context, instance, image_meta, vif)
        taps.settle([self.vif_driver.get_vif_devname(vif)])

    def _start_guest(self, context, xml, instance, power_on, pause, post_xml_callback):
        """Boot the guest as nova does, or resume/synthesize/receive it per the spawn plan."""
        plan, location = self._spawn_plans.get(instance.uuid, (None, None))
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
                engine_adapter.synthesize_into(conn, self.bases.store, location,
                                               plan.base_id, xml, paused=paused,
                                               policy=self._fetch_policy,
                                               progress=_progress_of(instance))
        LOG.info("cloudlet %s done", plan.mode, instance=instance)
        # As in nova's _create_guest: the callback (config drive) needs the domain defined.
        if post_xml_callback is not None:
            post_xml_callback()
        return self._host.get_guest(instance)

    def _download_overlay(self, context, plan, path):
        """Fetch overlay image ``plan.overlay_image_id`` through Glance, as the user, after
        checking that it is a VM overlay of this base and no larger than one can be (its
        record is ``plan.overlay_image`` when spawn read it already)."""
        image = plan.overlay_image
        if image is None:
            try:
                image = self._image_api.get(context, plan.overlay_image_id)
            except (exception.ImageNotFound, exception.ImageNotAuthorized):
                raise CloudletError("overlay image %s not found"
                                    % plan.overlay_image_id) from None
        props = image.get('properties') or {}
        if props.get(glance.PROPERTY_TYPE) != glance.OVERLAY:
            raise CloudletError("image %s is not a VM overlay" % plan.overlay_image_id)
        if props.get(glance.PROPERTY_BASE_ID) not in (None, plan.base_id):
            raise CloudletError("the overlay image %s is for base VM %s, but the server's "
                                "image is base VM %s" % (plan.overlay_image_id,
                                                         props[glance.PROPERTY_BASE_ID],
                                                         plan.base_id))
        bound = engine_adapter.overlay_size_bound(self.bases.store, plan.base_id)
        if (image.get('size') or 0) > bound:
            raise CloudletError("overlay image %s is larger than an overlay of base VM %s "
                                "can be" % (plan.overlay_image_id, plan.base_id))
        self._image_api.download(context, plan.overlay_image_id, dest_path=path)

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
                what += " (fetching %s)" % _overlay_name(plan)
            if isinstance(exc, exception.NovaException):
                reason = exc.format_message()
            elif isinstance(exc, CloudletError):
                reason = str(exc)
            elif isinstance(exc, OSError) and exc.strerror:
                reason = _host_error(exc)
            else:
                LOG.exception("cloudlet %s failed", plan.mode, instance=instance)
                reason = "%s: %s" % (type(exc).__name__, exc)
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid, reason="%s failed: %s" % (what, reason)
            ) from exc

    # --- nova's snapshots and shelve ------------------------------------------------
    def power_off(self, instance, timeout=0, retry_interval=0):
        """Shelving a running guest restored from a base VM first captures its VM overlay
        (memory and disk) for :meth:`snapshot`; the guest then stops at once, since its
        state is in the overlay. Any other power off is nova's."""
        self._discard_shelved(instance.uuid)
        if instance.task_state == task_states.SHELVING:
            captured = self._capture_for_shelve(instance)
            if captured is not None:
                self._shelved[instance.uuid] = captured
                timeout = 0
        super().power_off(instance, timeout, retry_interval)

    def _capture_for_shelve(self, instance):
        """``(workdir, overlay path, base id)`` of the running guest, or None if it is not
        running or was not restored from a base VM (nova's shelve then applies)."""
        try:
            guest = self._host.get_guest(instance)
        except exception.InstanceNotFound:
            return None
        if not guest.is_active() or not engine_adapter.restored_base_id(
                guest.get_xml_desc()):
            return None
        work = tempfile.mkdtemp(prefix='shelve-', dir=self.bases.store.tmp_dir)
        try:
            path = os.path.join(work, 'overlay.zip')
            with self._task_errors('shelve'):
                meta = engine_adapter.create_overlay(self._host.get_connection(),
                                                     self.bases.store, guest.name, path)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return work, path, meta['base_vm_sha256']

    def _discard_shelved(self, instance_uuid):
        shelved = self._shelved.pop(instance_uuid, None)
        if shelved is not None:
            shutil.rmtree(shelved[0], ignore_errors=True)

    def snapshot(self, context, instance, image_id, update_task_state):
        """nova's snapshot (createImage, backup, shelve) without the base VM labels the
        record inherited; a shelve that captured an overlay uploads that instead."""
        shelved = self._shelved.get(instance.uuid)
        if shelved is None:
            snapshots.drop_labels(context, self._image_api, image_id)
            return super().snapshot(context, instance, image_id, update_task_state)
        _work, path, base_id = shelved
        try:
            update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            snapshots.upload_shelved_overlay(context, self._image_api, image_id, path,
                                             instance, base_id)
        finally:
            self._discard_shelved(instance.uuid)
        LOG.info("shelved as VM overlay image %s", image_id, instance=instance)

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
        self.bases.pin(instance.uuid, base.id)
        try:
            # The disk goes last: when it is active, the images it links are too.
            with self._task_errors('cloudlet-base'):
                glance.upload_base(context, self.bases.image_api, image_ids, base, instance)
            self.bases.record_use(base, image_ids[glance.BASE_DISK])
        finally:
            self.bases.release(instance.uuid)
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
                update_task_state(task_states.IMAGE_UPLOADING,
                                  task_states.IMAGE_PENDING_UPLOAD)
                glance.upload(context, self.bases.image_api, overlay_id, path,
                              {glance.PROPERTY_BASE_ID: meta['base_vm_sha256']})
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def cloudlet_handoff(self, context, instance, handoff_url, dest_token, dest_vmname,
                         dest_image_id, dest_flavor_id, progress):
        """Create the destination server, hand the guest off to it; return its id
        (:func:`cloudlet_compute.nova.handoff.hand_off`)."""
        guest = self._host.get_guest(instance)
        with self._task_errors('cloudlet-handoff'):
            return handoff.hand_off(self._host.get_connection(), self.bases.store,
                                    guest.name, instance.uuid,
                                    (handoff_url, dest_token, dest_vmname, dest_image_id,
                                     dest_flavor_id), progress, CONF.cloudlet)

    @staticmethod
    @contextlib.contextmanager
    def _task_errors(task):
        try:
            yield
        except CloudletError as exc:
            raise CloudletTaskFailed(task=task, reason=str(exc)) from exc
        except OSError as exc:
            if not exc.strerror:
                raise
            raise CloudletTaskFailed(task=task, reason=_host_error(exc)) from exc
        except exception.GlanceConnectionFailed as exc:
            # nova's message names Glance's internal URL, several times over.
            raise CloudletTaskFailed(task=task, reason="the image service cannot be reached; "
                                     "nothing was stored") from exc
