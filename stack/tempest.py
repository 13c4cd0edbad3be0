"""Tempest, OpenStack's own integration suite, against the running embedded stack.

    python -m stack.tempest [--subset]   # --subset: the short curated list that `make test` runs

Installs Tempest into its own virtualenv (``.state/tempest/venv``: its pins are not nova's),
writes ``tempest.conf`` from the running cloud a (a plain bootable image of the tiny guest:
disk + kernel + ramdisk, the stack's flavors and shared provider network, admin credentials
for dynamic test projects, the features this cloud has), then runs ``tempest.api.compute``
(or the subset) with concurrency 1 and prints Tempest's summary. Tests that need what this
one-host cloud does not have are excluded in ``stack/tempest-exclude.txt``, each with its
reason. Exit status: Tempest's.
"""

import argparse
import os
import subprocess
import sys

from . import topology
from .bootstrap import connect
from .guest.guest import GUEST_DIR, KERNEL_CMDLINE
from .paths import HERE, ROOT

TEMPEST_VERSION = "47.0.0"
WORK = os.path.join(ROOT, ".state", "tempest")
VENV = os.path.join(WORK, "venv")
EXCLUDE = os.path.join(HERE, "tempest-exclude.txt")
IMAGE_NAME = "tempest-tiny"
SHUTDOWN_TIMEOUT = "2"

# A few minutes of the compute API on plain servers: create/list/show/delete, actions that
# keep the server on this host, snapshots to images, flavors, keypairs, limits.
SUBSET = [
    r"tempest\.api\.compute\.servers\.test_create_server\.ServersTestJSON\.",
    r"tempest\.api\.compute\.servers\.test_list_servers_negative\.",
    r"tempest\.api\.compute\.servers\.test_server_actions\.ServerActionsTestJSON\."
    r"test_(reboot_server_hard|stop_start_server|lock_unlock_server)",
    r"tempest\.api\.compute\.images\.test_images_oneserver\.",
    r"tempest\.api\.compute\.flavors\.",
    r"tempest\.api\.compute\.keypairs\.test_keypairs\.",
    r"tempest\.api\.compute\.limits\.",
]


def ensure_tempest():
    """Tempest's own virtualenv and workspace (idempotent); return the tempest command."""
    tempest = os.path.join(VENV, "bin", "tempest")
    if not os.path.exists(tempest):
        os.makedirs(WORK, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q",
                        "tempest==" + TEMPEST_VERSION], check=True)
    if not os.path.exists(os.path.join(WORK, "workspace", ".stestr.conf")):
        # Tempest registers workspaces by name in a per-user file: keep ours in WORK.
        subprocess.run([tempest, "init", "--workspace-path",
                        os.path.join(WORK, "workspaces.yaml"), os.path.join(WORK, "workspace")],
                       check=True,
                       cwd=WORK)
    return tempest


def ensure_image(admin):
    """The tiny guest as a public plain bootable image (disk + kernel + ramdisk). Its guest
    has no ACPI handler: nova's clean stop waits only ``SHUTDOWN_TIMEOUT`` for it (the
    default 60 s made each stop of a test a minute)."""
    found = admin.image.find_image(IMAGE_NAME)
    if found is not None and found.status == "active":
        if found.properties.get("os_shutdown_timeout") != SHUTDOWN_TIMEOUT:
            admin.image.update_image(found, os_shutdown_timeout=SHUTDOWN_TIMEOUT)
        return found
    parts = {}
    for part, filename, fmt in (("kernel", "vmlinuz", "aki"), ("ramdisk", "initrd.img", "ari")):
        parts[part] = admin.image.find_image(IMAGE_NAME + "-" + part) or \
            admin.image.create_image(name=IMAGE_NAME + "-" + part, disk_format=fmt,
                                     container_format=fmt, visibility="public",
                                     filename=os.path.join(GUEST_DIR, filename))
    return admin.image.create_image(
        name=IMAGE_NAME, filename=os.path.join(GUEST_DIR, "disk.raw"), disk_format="raw",
        container_format="bare", visibility="public", kernel_id=parts["kernel"].id,
        ramdisk_id=parts["ramdisk"].id, os_command_line=KERNEL_CMDLINE,
        os_shutdown_timeout=SHUTDOWN_TIMEOUT)


def render_conf(cloud, image_id, flavor_ids, network):
    """tempest.conf for ``cloud`` (a topology.Cloud), one value per line, with its reason."""
    return "\n".join([
        "[DEFAULT]", "log_dir = %s" % WORK, "log_file = tempest.log",
        "[auth]", "admin_username = admin",
        "admin_password = %s" % topology.ADMIN_PASSWORD, "admin_project_name = admin",
        "admin_domain_name = Default", "use_dynamic_credentials = true",
        "# no project network type in this ML2: test projects use the shared provider network",
        "create_isolated_networks = false",
        "[identity]", "uri_v3 = %s" % cloud.keystone_url,
        "auth_version = v3", "region = %s" % topology.REGION,
        "[identity-feature-enabled]", "api_v2 = false",
        "[compute]", "image_ref = %s" % image_id, "image_ref_alt = %s" % image_id,
        "flavor_ref = %s" % flavor_ids[0], "flavor_ref_alt = %s" % flavor_ids[1],
        "fixed_network_name = %s" % network, "min_compute_nodes = 1",
        "build_timeout = 300",
        "[compute-feature-enabled]",
        "# one compute host: no migration; no resize to the same host", "resize = false",
        "cold_migration = false", "live_migration = false",
        "# nova's serial consoles are TCP on 127.0.0.1 (the tests' guest channel); no proxies",
        "vnc_console = false", "spice_console = false", "serial_console = false",
        "# the tiny guest has no agent (password) and no config drive reader",
        "change_password = false", "personality = false",
        "attach_encrypted_volume = false", "console_output = true", "pause = true",
        "suspend = true", "shelve = true", "shelve_migrate = false", "snapshot = true",
        "rescue = false", "interface_attach = true", "metadata_service = false",
        "[network]", "project_networks_reachable = false", "shared_physical_network = true",
        "[validation]", "# the tiny guest runs no SSH server", "run_validation = false",
        "[service_available]", "cinder = false", "swift = false", "neutron = true",
        "glance = true", "nova = true", "horizon = false", "placement = true", ""])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stack.tempest",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--subset", action="store_true",
                    help="run the short curated list instead of tempest.api.compute")
    args = ap.parse_args(argv)
    tempest = ensure_tempest()
    cloud = topology.Cloud("a")
    admin = connect("cloudlet-admin")
    image = ensure_image(admin)
    flavors = [admin.compute.find_flavor(name[0]).id for name in topology.FLAVORS[:2]]
    workspace = os.path.join(WORK, "workspace")
    conf = os.path.join(workspace, "etc", "tempest.conf")
    with open(conf, "w") as f:
        f.write(render_conf(cloud, image.id, flavors, cloud.provider_network))
    cmd = [tempest, "run", "--config-file", conf, "--concurrency", "1",
           "--exclude-list", EXCLUDE]
    if args.subset:
        include = os.path.join(WORK, "subset.txt")
        with open(include, "w") as f:
            f.write("\n".join(SUBSET) + "\n")
        cmd += ["--include-list", include]
    else:
        cmd += ["--regex", r"^tempest\.api\.compute\."]
    print("tempest: %s" % " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=workspace).returncode


if __name__ == "__main__":
    sys.exit(main())
