"""Import Base VM and VM Handoff forms."""

import logging
import os
import shutil
import tempfile
import zipfile

from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from horizon import exceptions
from horizon import forms
from horizon import messages

from dashboard_panel.api import cloudlet as api

LOG = logging.getLogger(__name__)

INDEX_URL = "horizon:project:cloudlet:index"


def _local_path(uploaded, scratch):
    """A path on this server holding ``uploaded`` (Django keeps big uploads in a temp
    file already; small ones are written out)."""
    if hasattr(uploaded, "temporary_file_path"):
        return uploaded.temporary_file_path()
    path = os.path.join(scratch, "package.zip")
    with open(path, "wb") as out:
        for chunk in uploaded.chunks():
            out.write(chunk)
    return path


class ImportBaseVMForm(forms.SelfHandlingForm):
    name = forms.CharField(max_length=255, label=_("Name"), required=False,
                           widget=forms.TextInput(attrs={"placeholder": "ubuntu-base"}),
                           help_text=_("Image names get -disk, -memory, -diskhash and "
                                       "-memhash appended. Empty: the package's name."))
    package = forms.FileField(label=_("Base VM package (zip)"),
                              help_text=_("A zip made by 'cloudlet base export'."),
                              widget=forms.FileInput(attrs={"accept": ".zip"}))
    public = forms.BooleanField(label=_("Public"), required=False)

    def clean_package(self):
        package = self.cleaned_data["package"]
        if not zipfile.is_zipfile(package):
            raise forms.ValidationError(
                _("%s is not a zip archive (expected a base package from "
                  "'cloudlet base export').") % package.name)
        package.seek(0)
        return package

    def handle(self, request, data):
        scratch = tempfile.mkdtemp(prefix="cloudlet-upload-",
                                   dir=getattr(settings, "FILE_UPLOAD_TEMP_DIR", None))
        try:
            path = _local_path(data["package"], scratch)
            ids = api.import_base(request, path, name=data["name"] or None,
                                  visibility="public" if data["public"] else "private")
        except api.CloudletAPIError:
            exceptions.handle(request, _("Unable to import base VM: %(exc)s"),
                              details=False, redirect=reverse(INDEX_URL))
            return False
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        messages.success(request, _("Imported base VM as four images (disk image %s).")
                         % ids["cloudlet_base_disk"])
        return ids


class HandoffForm(forms.SelfHandlingForm):
    instance_id = forms.CharField(widget=forms.HiddenInput())
    dest_keystone = forms.CharField(label=_("Keystone endpoint for destination OpenStack"),
                                    widget=forms.TextInput(
                                        attrs={"placeholder": "https://dest:5000/v3"}))
    dest_account = forms.CharField(label=_("Destination Account"))
    dest_password = forms.CharField(label=_("Destination Password"),
                                    widget=forms.PasswordInput(render_value=False))
    dest_project = forms.CharField(label=_("Destination Project"))
    dest_vmname = forms.CharField(label=_("Instance Name at the destination"))

    def handle(self, request, data):
        try:
            api.handoff(request, data["instance_id"], keystone_url=data["dest_keystone"],
                        username=data["dest_account"], password=data["dest_password"],
                        project_name=data["dest_project"], name=data["dest_vmname"])
        except api.CloudletAPIError:
            exceptions.handle(request, _("VM handoff failed: %(exc)s"), details=False,
                              redirect=reverse(INDEX_URL))
            return False
        messages.success(request, _("Handoff of the instance started."))
        return True
