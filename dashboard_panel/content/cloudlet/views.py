"""The Cloudlet page (three tables) and its modal views."""

import logging

from django import http
from django.urls import reverse
from django.urls import reverse_lazy
from django.utils.http import content_disposition_header
from django.utils.translation import gettext_lazy as _
from horizon import exceptions
from horizon import forms
from horizon import tables
from horizon import workflows

from dashboard_panel.api import cloudlet as api
from dashboard_panel.content.cloudlet import forms as cloudlet_forms
from dashboard_panel.content.cloudlet import tables as cloudlet_tables
from dashboard_panel.content.cloudlet import workflows as cloudlet_workflows

LOG = logging.getLogger(__name__)

INDEX_URL = "horizon:project:cloudlet:index"


class IndexView(tables.MultiTableView):
    table_classes = (cloudlet_tables.BaseVMsTable, cloudlet_tables.VMOverlaysTable,
                     cloudlet_tables.InstancesTable)
    template_name = "project/cloudlet/index.html"
    page_title = _("Cloudlet")

    def _get(self, call, what):
        try:
            return call(self.request)
        except api.CloudletAPIError:
            exceptions.handle(self.request, _("Unable to retrieve %s: %%(exc)s") % what,
                              details=False)
            return []

    def get_images_data(self):
        return self._get(api.base_image_list, _("base VMs"))

    def get_overlays_data(self):
        return self._get(api.overlay_list, _("VM overlays"))

    def get_instances_data(self):
        return self._get(api.instance_list, _("instances"))


class ImportBaseView(forms.ModalFormView):
    form_class = cloudlet_forms.ImportBaseVMForm
    template_name = "project/cloudlet/import.html"
    modal_id = "import_base_modal"
    form_id = "import_base_form"
    submit_url = reverse_lazy("horizon:project:cloudlet:import")
    success_url = reverse_lazy(INDEX_URL)
    submit_label = _("Import")
    page_title = _("Import Base VM")


class ResumeBaseView(workflows.WorkflowView):
    workflow_class = cloudlet_workflows.ResumeBaseVM

    def get_initial(self):
        initial = super().get_initial()
        initial["image_id"] = (self.request.GET.get("image_id")
                              or self.request.POST.get("image_id"))
        return initial


class SynthesisView(workflows.WorkflowView):
    workflow_class = cloudlet_workflows.StartVMSynthesis


class HandoffView(forms.ModalFormView):
    form_class = cloudlet_forms.HandoffForm
    template_name = "project/cloudlet/handoff.html"
    modal_id = "handoff_modal"
    form_id = "handoff_form"
    success_url = reverse_lazy(INDEX_URL)
    submit_label = _("Hand off")
    page_title = _("VM Handoff")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["submit_url"] = reverse("horizon:project:cloudlet:handoff",
                                        args=[self.kwargs["instance_id"]])
        return context

    def get_initial(self):
        return {"instance_id": self.kwargs["instance_id"]}


def download_overlay(request, image_id):
    """Stream a VM overlay image from Glance to the browser as ``<name>.zip``."""
    try:
        name, size, chunks = api.download_overlay(request, image_id)
    except api.CloudletAPIError:
        exceptions.handle(request, _("Unable to download VM overlay: %(exc)s"), details=False,
                          redirect=reverse(INDEX_URL))
    filename = name if name.endswith(".zip") else name + ".zip"
    response = http.StreamingHttpResponse(chunks, content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    if size:
        response["Content-Length"] = str(size)
    return response
