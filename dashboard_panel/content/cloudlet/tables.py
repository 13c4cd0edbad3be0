"""The panel's three tables: Base VM Images, VM Overlays, Instances."""

import logging

from django.template.defaultfilters import filesizeformat
from django.template.defaultfilters import title
from django.template.defaultfilters import yesno
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy
from horizon import exceptions
from horizon import tables
from horizon.utils import filters

from dashboard_panel.api import cloudlet as api

LOG = logging.getLogger(__name__)

# Column status_choices: True = done, False = failed, missing = still running (the row
# refreshes itself by ajax until it leaves that state).
IMAGE_STATUS_CHOICES = (("active", True), ("killed", False), ("deleted", False),
                        ("deactivated", False))
INSTANCE_STATUS_CHOICES = (("active", True), ("shutoff", True), ("suspended", True),
                           ("paused", True), ("error", False))
TASK_STATUS_CHOICES = ((None, True), ("none", True))
# Tasks whose progress is shown next to them (VM handoff).
PROGRESS_TASKS = ("migrating",)
TYPE_DISPLAY = {api.RESUMED: _("Resumed Base VM"), api.SYNTHESIZED: _("Synthesized VM")}

# An instance that a table action may touch: ACTIVE and no task running.
READY_STATUS = "ACTIVE"


def fail(request, message):
    """Show ``message`` (with ``%(exc)s``: the reason) and tell BatchAction the action failed
    without its generic message."""
    exceptions.handle(request, message, escalate=True, details=False)


# --- Base VM Images -----------------------------------------------------------------------

class ImportBaseVM(tables.LinkAction):
    name = "import"
    verbose_name = _("Import Base VM")
    url = "horizon:project:cloudlet:import"
    classes = ("ajax-modal",)
    icon = "upload"


class ResumeBaseVM(tables.LinkAction):
    name = "resume"
    verbose_name = _("Resume Base VM")
    url = "horizon:project:cloudlet:resume"
    classes = ("ajax-modal", "btn-launch")
    icon = "play"

    def get_link_url(self, datum):
        return "%s?%s" % (reverse(self.url), urlencode({"image_id": datum.id}))

    def allowed(self, request, datum):
        return datum is None or datum.status == "active"


class DeleteBaseVM(tables.DeleteAction):
    help_text = _("The base VM's four images (disk, memory and both hash lists) are "
                  "deleted. Overlays made from it cannot be synthesized here any more.")

    @staticmethod
    def action_present(count):
        return ngettext_lazy("Delete Base VM", "Delete Base VMs", count)

    @staticmethod
    def action_past(count):
        return ngettext_lazy("Deleted Base VM", "Deleted Base VMs", count)

    def delete(self, request, obj_id):
        try:
            api.delete_base(request, obj_id)
        except api.CloudletAPIError:
            fail(request, _("Unable to delete base VM: %(exc)s"))


class UpdateBaseRow(tables.Row):
    ajax = True

    def get_data(self, request, image_id):
        return api.base_image_get(request, image_id)


def short_id(attr):
    def get(datum):
        value = getattr(datum, attr, None)
        return value[:12] if value else "-"
    return get


class BaseVMsTable(tables.DataTable):
    name = tables.WrappingColumn("name", verbose_name=_("Name"))
    base_id = tables.Column(short_id("base_id"), verbose_name=_("Base VM ID"))
    status = tables.Column("status", verbose_name=_("Status"), filters=(title,),
                           status=True, status_choices=IMAGE_STATUS_CHOICES)
    public = tables.Column("is_public", verbose_name=_("Public"),
                           filters=(yesno, title))
    min_ram = tables.Column("min_ram", verbose_name=_("Min RAM (MiB)"))
    min_disk = tables.Column("min_disk", verbose_name=_("Min Disk (GiB)"))

    class Meta:
        name = "images"
        verbose_name = _("Base VM Images")
        status_columns = ["status"]
        row_class = UpdateBaseRow
        table_actions = (ImportBaseVM, DeleteBaseVM)
        row_actions = (ResumeBaseVM, DeleteBaseVM)


# --- VM Overlays --------------------------------------------------------------------------

class DownloadVMOverlay(tables.LinkAction):
    name = "download"
    verbose_name = _("Download VM overlay")
    url = "horizon:project:cloudlet:download"
    icon = "download"

    def allowed(self, request, datum):
        return datum is not None and datum.status == "active"


class DeleteVMOverlay(tables.DeleteAction):
    @staticmethod
    def action_present(count):
        return ngettext_lazy("Delete VM Overlay", "Delete VM Overlays", count)

    @staticmethod
    def action_past(count):
        return ngettext_lazy("Deleted VM Overlay", "Deleted VM Overlays", count)

    def delete(self, request, obj_id):
        try:
            api.delete_overlay(request, obj_id)
        except api.CloudletAPIError:
            fail(request, _("Unable to delete VM overlay: %(exc)s"))


class UpdateOverlayRow(tables.Row):
    ajax = True

    def get_data(self, request, image_id):
        return api.overlay_get(request, image_id)


def overlay_size(overlay):
    return filesizeformat(overlay.size) if overlay.size else "-"


class VMOverlaysTable(tables.DataTable):
    name = tables.WrappingColumn("name", verbose_name=_("Name"))
    base_id = tables.Column(short_id("base_id"), verbose_name=_("Base VM ID"))
    size = tables.Column(overlay_size, verbose_name=_("Size"))
    status = tables.Column("status", verbose_name=_("Status"), filters=(title,),
                           status=True, status_choices=IMAGE_STATUS_CHOICES)

    class Meta:
        name = "overlays"
        verbose_name = _("VM Overlays")
        status_columns = ["status"]
        row_class = UpdateOverlayRow
        table_actions = (DeleteVMOverlay,)
        row_actions = (DownloadVMOverlay, DeleteVMOverlay)


# --- Instances ----------------------------------------------------------------------------

class StartVMSynthesis(tables.LinkAction):
    name = "synthesis"
    verbose_name = _("Start VM Synthesis")
    url = "horizon:project:cloudlet:synthesis"
    classes = ("ajax-modal", "btn-launch")
    icon = "cloud-download"


class CreateVMOverlay(tables.BatchAction):
    name = "create_overlay"
    classes = ("btn-confirm",)
    help_text = _("The instance's difference from its base VM (memory and disk) becomes a "
                  "VM overlay image. The instance keeps running.")

    @staticmethod
    def action_present(count):
        return ngettext_lazy("Create VM Overlay", "Create VM Overlays", count)

    @staticmethod
    def action_past(count):
        return ngettext_lazy("Started creating VM Overlay", "Started creating VM Overlays",
                             count)

    def allowed(self, request, datum):
        return (datum is not None and datum.cloudlet_type == api.RESUMED
                and datum.status == READY_STATUS and not datum.task_state)

    def action(self, request, obj_id):
        datum = self.table.get_object_by_id(obj_id)
        try:
            api.create_overlay(request, obj_id, "%s-overlay" % datum.name)
        except api.CloudletAPIError:
            fail(request, _("Unable to create VM overlay: %(exc)s"))
        except Exception:
            # Horizon shows its generic message and logs one line: keep the traceback.
            LOG.exception("create VM overlay of instance %s", obj_id)
            raise


class VMHandoff(tables.LinkAction):
    name = "handoff"
    verbose_name = _("VM Handoff")
    url = "horizon:project:cloudlet:handoff"
    classes = ("ajax-modal",)
    icon = "share"

    def allowed(self, request, datum):
        return (datum is not None and datum.cloudlet_type == api.SYNTHESIZED
                and datum.status == READY_STATUS and not datum.task_state)


class TerminateInstance(tables.DeleteAction):
    name = "terminate"
    help_text = _("Terminated instances are not recoverable.")

    @staticmethod
    def action_present(count):
        return ngettext_lazy("Terminate Instance", "Terminate Instances", count)

    @staticmethod
    def action_past(count):
        return ngettext_lazy("Scheduled termination of Instance",
                             "Scheduled termination of Instances", count)

    def delete(self, request, obj_id):
        try:
            api.instance_delete(request, obj_id)
        except api.CloudletAPIError:
            fail(request, _("Unable to terminate instance: %(exc)s"))


class UpdateInstanceRow(tables.Row):
    ajax = True

    def get_data(self, request, instance_id):
        return api.instance_get(request, instance_id)


def instance_type(instance):
    return TYPE_DISPLAY.get(instance.cloudlet_type, instance.cloudlet_type)


def instance_ips(instance):
    return ", ".join(instance.ips) or "-"


def instance_task(instance):
    """The task, with nova's progress while there is one to show (a VM handoff is
    ``migrating`` with progress rising to 100); None without a task."""
    task = instance.task_state
    progress = getattr(instance, "progress", None)
    if task and task in PROGRESS_TASKS and progress is not None:
        return "%s (%d%%)" % (task, progress)
    return task


class InstancesTable(tables.DataTable):
    name = tables.WrappingColumn("name", verbose_name=_("Instance Name"))
    type = tables.Column(instance_type, verbose_name=_("Type"))
    ip = tables.Column(instance_ips, verbose_name=_("IP Address"))
    flavor = tables.Column("flavor_name", verbose_name=_("Size"))
    status = tables.Column("status", verbose_name=_("Status"),
                           filters=(title, filters.replace_underscores),
                           status=True, status_choices=INSTANCE_STATUS_CHOICES)
    task = tables.Column(instance_task, verbose_name=_("Task"), empty_value=_("None"),
                         filters=(title, filters.replace_underscores),
                         status=True, status_choices=TASK_STATUS_CHOICES)
    power = tables.Column("power_state", verbose_name=_("Power State"), filters=(title,))

    class Meta:
        name = "instances"
        verbose_name = _("Instances")
        status_columns = ["status", "task"]
        row_class = UpdateInstanceRow
        table_actions = (StartVMSynthesis, TerminateInstance)
        row_actions = (CreateVMOverlay, VMHandoff, TerminateInstance)
