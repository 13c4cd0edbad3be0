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


TO_CLOUD = "cloud"
RESIDUE = "residue"


def _switched(label, mode=TO_CLOUD, **attrs):
    """Widget attributes of a field shown only for handoff type ``mode``."""
    return dict({"class": "switched", "data-switch-on": "handoff_type",
                 "data-handoff_type-%s" % mode: label}, **attrs)


class HandoffForm(forms.SelfHandlingForm):
    """VM handoff to another cloud (its Keystone and a user there), or, as the
    "residue", the instance's state stored as a VM overlay image in this cloud."""

    instance_id = forms.CharField(widget=forms.HiddenInput())
    handoff_type = forms.ChoiceField(
        label=_("Hand off to"), initial=TO_CLOUD,
        choices=[(TO_CLOUD, _("Another OpenStack++ cloud")),
                 (RESIDUE, _("A VM overlay in Glance (this cloud)"))],
        widget=forms.ThemableSelectWidget(attrs={"class": "switchable",
                                                 "data-slug": "handoff_type"}))
    dest_keystone = forms.CharField(
        label=_("Keystone endpoint for destination OpenStack"), required=False,
        widget=forms.TextInput(attrs=_switched(
            _("Keystone endpoint for destination OpenStack"),
            placeholder="https://dest:5000/v3")))
    dest_account = forms.CharField(
        label=_("Destination Account"), required=False,
        widget=forms.TextInput(attrs=_switched(_("Destination Account"))))
    dest_password = forms.CharField(
        label=_("Destination Password"), required=False,
        widget=forms.PasswordInput(render_value=False,
                                   attrs=_switched(_("Destination Password"))))
    dest_project = forms.CharField(
        label=_("Destination Project"), required=False,
        widget=forms.TextInput(attrs=_switched(_("Destination Project"))))
    dest_vmname = forms.CharField(
        label=_("Instance Name at the destination"), required=False, max_length=255,
        widget=forms.TextInput(attrs=_switched(_("Instance Name at the destination"),
                                               placeholder=_("the same name"))))
    residue_name = forms.CharField(
        label=_("VM overlay image name"), required=False, max_length=255,
        widget=forms.TextInput(attrs=_switched(_("VM overlay image name"), RESIDUE)))

    REQUIRED = {TO_CLOUD: ("dest_keystone", "dest_account", "dest_password", "dest_project"),
                RESIDUE: ("residue_name",)}

    def clean(self):
        data = super().clean()
        for field in self.REQUIRED.get(data.get("handoff_type"), ()):
            if not (data.get(field) or "").strip():
                self.add_error(field, _("This field is required."))
        if data.get("handoff_type") == RESIDUE and "/" in (data.get("residue_name") or ""):
            self.add_error("residue_name", _("An image name cannot contain '/'."))
        return data

    def handle(self, request, data):
        try:
            if data["handoff_type"] == RESIDUE:
                image_id = api.handoff_residue(request, data["instance_id"],
                                               data["residue_name"].strip())
            else:
                api.handoff(request, data["instance_id"],
                            keystone_url=data["dest_keystone"].strip(),
                            username=data["dest_account"].strip(),
                            password=data["dest_password"],
                            project_name=data["dest_project"].strip(),
                            name=data["dest_vmname"].strip() or None)
        except api.CloudletAPIError as exc:
            # Shown in the form, which keeps what was typed (but the password).
            self.api_error(_("VM handoff failed: %s") % exc)
            return False
        if data["handoff_type"] == RESIDUE:
            messages.success(request, _('Storing the instance as VM overlay "%(name)s" '
                                        '(image %(id)s).')
                             % {"name": data["residue_name"].strip(), "id": image_id})
        else:
            messages.success(request, _("Handoff of the instance started: its Task column "
                                        "shows the progress; once the destination runs it, "
                                        "it leaves this cloud."))
        return True
