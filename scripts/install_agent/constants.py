"""What OpenStack++ needs on the target, the agent's defaults and its exit codes."""

# --- what OpenStack++ needs (kept equal to the package's constants by tests/fab) -----------------
SUPPORTED_NOVA = ("34.0.0",)
SUPPORTED_HORIZON = ("27.0.0",)
PACKAGE = "openstackpp"
PASTE_SECTION = "app:osapi_compute_app_v21"
PASTE_KEY = "paste.app_factory"
PASTE_APP_FACTORY = "cloudlet_api.router:APIRouter.factory"   # cloudlet_api.PASTE_APP_FACTORY
COMPUTE_DRIVER = "cloudlet.CloudletDriver"                     # cloudlet_compute.nova.shim.DRIVER
EXTENSION_ALIAS = "os-cloudlet"
HORIZON_ENABLED_NAME = "_1920_project_cloudlet_panel.py"
DEFAULT_BACKUP_DIR = "/var/lib/openstackpp/install"
DEFAULT_LIBVIRT_URI = "qemu:///system"
CLOUDLET_OPTIONS = ("handoff_host", "cache_dir", "overlay_url_schemes")   # [cloudlet] in nova.conf
# nova.conf's [filter_scheduler] weight_classes: nova's weighers and the cached-base one.
SCHEDULER_WEIGHERS = ("nova.scheduler.weights.all_weighers",
                      "cloudlet_compute.nova.weigher.CachedBaseWeigher")
SCHEDULER_WEIGHERS_COMMENT = ("# nova-scheduler prefers hosts that cache the request's "
                              "base VM.")
CLOUDLET_COMMENTS = {   # written above an option that install adds
    "handoff_host": "# Address of this cloud on the veth link between the clouds (VM hand-off).",
}

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
