"""Resume Base VM and Start VM Synthesis workflows."""

import logging

from django.utils.translation import gettext_lazy as _
from horizon import exceptions
from horizon import forms
from horizon import workflows

from dashboard_panel.api import cloudlet as api

LOG = logging.getLogger(__name__)

INDEX_URL = "horizon:project:cloudlet:index"


def fits(flavor, base):
    """Whether ``flavor`` is big enough for base VM ``base`` (its image's min_ram/min_disk)."""
    return flavor.ram >= base.min_ram and flavor.disk >= base.min_disk


def flavor_choices(flavors):
    return [(f.id, "%s (%d VCPU, %d MiB RAM, %d GiB disk)" % (f.name, f.vcpus, f.ram, f.disk))
            for f in sorted(flavors, key=lambda f: (f.ram, f.disk, f.vcpus, f.name))]


def network_choices(request):
    try:
        networks = api.network_list(request)
    except api.CloudletAPIError:
        exceptions.handle(request, _("Unable to retrieve networks: %(exc)s"), details=False)
        networks = []
    return [("", _("No network (as the base VM)"))] + sorted(networks, key=lambda n: n[1])


class CloudletWorkflow(workflows.Workflow):
    """A workflow whose failure message carries the reason (one message, not two)."""

    success_url = INDEX_URL
    reason = None

    def format_status_message(self, message):
        text = message % self.context.get("name", "")
        if self.reason:
            text = "%s: %s" % (text, self.reason)
        return text

    def run(self, call, *args, **kwargs):
        try:
            call(self.request, *args, **kwargs)
        except api.CloudletAPIError as exc:
            self.reason = str(exc)
            return False
        return True


# --- Resume Base VM -----------------------------------------------------------------------

class SetResumeAction(workflows.Action):
    image_id = forms.CharField(widget=forms.HiddenInput())
    base_name = forms.CharField(label=_("Base VM"), required=False,
                                widget=forms.TextInput(attrs={"readonly": "readonly"}))
    name = forms.CharField(max_length=255, label=_("Instance Name"))
    flavor = forms.ThemableChoiceField(label=_("Flavor"),
                                       help_text=_("Only flavors with at least the base "
                                                   "VM's memory and disk are listed."))
    network = forms.ThemableChoiceField(label=_("Network"), required=False)

    class Meta:
        name = _("Details")
        help_text_template = "project/cloudlet/_resume_help.html"

    def __init__(self, request, context, *args, **kwargs):
        super().__init__(request, context, *args, **kwargs)
        base = self._base(request, context.get("image_id"))
        if base:
            self.fields["base_name"].initial = base.name

    def _base(self, request, image_id):
        if not hasattr(self, "_base_image"):
            self._base_image = None
            if image_id:
                try:
                    self._base_image = api.base_image_get(request, image_id)
                except api.CloudletAPIError:
                    exceptions.handle(request, _("Unable to retrieve the base VM: %(exc)s"),
                                      details=False)
        return self._base_image

    def populate_flavor_choices(self, request, context):
        base = self._base(request, context.get("image_id"))
        try:
            flavors = api.flavor_list(request)
        except api.CloudletAPIError:
            exceptions.handle(request, _("Unable to retrieve flavors: %(exc)s"), details=False)
            flavors = []
        fitting = [f for f in flavors if base is None or fits(f, base)]
        if not fitting:
            return [("", _("No flavor fits this base VM"))]
        return flavor_choices(fitting)

    def populate_network_choices(self, request, context):
        return network_choices(request)


class SetResume(workflows.Step):
    action_class = SetResumeAction
    depends_on = ("image_id",)
    contributes = ("image_id", "name", "flavor", "network")


class ResumeBaseVM(CloudletWorkflow):
    slug = "resume_base_vm"
    name = _("Resume Base VM")
    finalize_button_name = _("Resume")
    success_message = _('Resuming base VM as "%s".')
    failure_message = _('Unable to resume base VM as "%s"')
    default_steps = (SetResume,)

    def handle(self, request, context):
        return self.run(api.resume_base, context["name"], context["image_id"],
                        context["flavor"], context.get("network") or None)


# --- Start VM Synthesis -------------------------------------------------------------------

class SetSynthesisAction(workflows.Action):
    overlay_image = forms.ThemableChoiceField(label=_("VM overlay image"), required=False)
    overlay_url = forms.URLField(label=_("URL for VM overlay"), assume_scheme="http",
                                 required=False,
                                 widget=forms.TextInput(
                                     attrs={"placeholder": "http://host/overlay.zip"}))
    name = forms.CharField(max_length=255, label=_("Instance Name"))
    flavor = forms.ThemableChoiceField(label=_("Flavor"))
    network = forms.ThemableChoiceField(label=_("Network"), required=False)

    class Meta:
        name = _("Details")
        help_text_template = "project/cloudlet/_synthesis_help.html"

    def populate_overlay_image_choices(self, request, context):
        try:
            overlays = [o for o in api.overlay_list(request) if o.status == "active"]
        except api.CloudletAPIError:
            exceptions.handle(request, _("Unable to retrieve VM overlays: %(exc)s"),
                              details=False)
            overlays = []
        self._overlays = {o.id: o for o in overlays}
        return [("", _("None: use the URL below"))] + [(o.id, o.name or o.id) for o in overlays]

    def populate_flavor_choices(self, request, context):
        try:
            self._flavors = {f.id: f for f in api.flavor_list(request)}
        except api.CloudletAPIError:
            exceptions.handle(request, _("Unable to retrieve flavors: %(exc)s"), details=False)
            self._flavors = {}
        return flavor_choices(self._flavors.values())

    def populate_network_choices(self, request, context):
        return network_choices(request)

    def _base_id(self, cleaned):
        """The base VM the chosen overlay (image or URL) needs."""
        image, url = cleaned.get("overlay_image"), cleaned.get("overlay_url")
        if bool(image) == bool(url):
            raise forms.ValidationError(
                _("Choose a VM overlay image or give the URL of a VM overlay (one of them)."))
        if image:
            return self._overlays[image].base_id
        try:
            return api.overlay_meta(self.request, url).get("base_vm_sha256")
        except api.CloudletAPIError as exc:
            raise forms.ValidationError(_("Cannot use this VM overlay: %s") % exc)

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        base_id = self._base_id(cleaned)
        try:
            base = api.base_image_find(self.request, base_id)
        except api.CloudletAPIError as exc:
            raise forms.ValidationError(_("Unable to look for the base VM: %s") % exc)
        if base is None:
            raise forms.ValidationError(
                _("The overlay needs base VM %s, which is not in this cloud: import it "
                  "first.") % base_id)
        flavor = self._flavors.get(cleaned.get("flavor"))
        if flavor is not None and not fits(flavor, base):
            raise forms.ValidationError(
                _("Flavor %(flavor)s is too small for base VM %(base)s (needs %(ram)d MiB "
                  "RAM, %(disk)d GiB disk).") % {"flavor": flavor.name, "base": base.name,
                                                 "ram": base.min_ram, "disk": base.min_disk})
        cleaned["image_id"] = base.id
        return cleaned


class SetSynthesis(workflows.Step):
    action_class = SetSynthesisAction
    contributes = ("overlay_image", "overlay_url", "name", "flavor", "network", "image_id")


class StartVMSynthesis(CloudletWorkflow):
    slug = "start_vm_synthesis"
    name = _("Start VM Synthesis")
    finalize_button_name = _("Synthesize")
    success_message = _('Started VM synthesis of "%s".')
    failure_message = _('Unable to start VM synthesis of "%s"')
    default_steps = (SetSynthesis,)

    def handle(self, request, context):
        return self.run(api.synthesize, context["name"], context["image_id"],
                        context["flavor"], context.get("overlay_url") or None,
                        context.get("network") or None,
                        overlay_image=context.get("overlay_image") or None)
