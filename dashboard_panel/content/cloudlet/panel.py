from django.utils.translation import gettext_lazy as _
import horizon


class Cloudlet(horizon.Panel):
    name = _("Cloudlet")
    slug = "cloudlet"
    permissions = ("openstack.services.compute", "openstack.services.image")
