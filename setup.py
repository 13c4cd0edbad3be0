"""OpenStack++: cloudlet VM overlays, VM synthesis and VM handoff for OpenStack."""
from setuptools import find_packages, setup

setup(
    name="openstackpp",
    version="0.1.0",
    description="Cloudlet support for OpenStack: VM overlays, VM synthesis, VM handoff",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["cloudlet_compute*", "cloudlet_api*",
                                    "dashboard_panel*", "client*"]),
    include_package_data=True,
    package_data={"dashboard_panel": ["content/*/templates/*/*.html"]},
    # Every third-party import of the product (cloudlet_compute, cloudlet_api, dashboard_panel,
    # client, fabfile.py). Always needed: the engine and the `cloudlet` CLI (msgpack,
    # zstandard, libvirt-python, requests and urllib3 (fetch); cryptography for the handoff
    # channel) and `cloudlet-client` / the Horizon panel's OpenStack calls (openstacksdk,
    # keystoneauth1).
    # `fab install` pip-installs this wheel into the target's OpenStack python with these
    # (not the extras). Tested versions: constraints.txt.
    install_requires=["msgpack>=1.0", "zstandard>=0.22", "libvirt-python>=9.0",
                      "requests>=2.28", "urllib3>=2.3", "cryptography>=2.0", "openstacksdk",
                      "keystoneauth1"],
    extras_require={
        # nova-api side (cloudlet_api) and nova-compute side (cloudlet_compute.nova).
        "nova": ["nova>=34.0.0", "oslo.config", "oslo.log", "oslo.messaging", "oslo.utils",
                 "oslo.concurrency", "oslo.policy", "WebOb"],
        # The Horizon panel (dashboard_panel).
        "horizon": ["horizon>=27.0.0", "Django", "python-novaclient", "python-glanceclient"],
        # `openstack cloudlet ...` (client/osc).
        "osc": ["osc-lib", "python-openstackclient"],
        # fabfile.py (its tasks; the agent, scripts/install_agent/, is stdlib only and not
        # installed).
        "fab": ["fabric>=3", "invoke"],
    },
    entry_points={
        "console_scripts": [
            "cloudlet = cloudlet_compute.cli:main",
            "cloudlet-nova-shim = cloudlet_compute.nova.shim:main",
            "cloudlet-client = client.cloudlet_client:main",
        ],
        "openstack.cli.extension": ["cloudlet = client.osc.plugin"],
        "openstack.cloudlet.v1": [
            "cloudlet_base_import = client.osc.base:ImportBase",
            "cloudlet_base_export = client.osc.base:ExportBase",
            "cloudlet_base_list = client.osc.base:ListBase",
            "cloudlet_base_create = client.osc.base:CreateBase",
            "cloudlet_base_resume = client.osc.base:ResumeBase",
            "cloudlet_base_cache = client.osc.base:CacheBase",
            "cloudlet_base_hosts = client.osc.base:ListBaseHosts",
            "cloudlet_overlay_create = client.osc.overlay:CreateOverlay",
            "cloudlet_overlay_list = client.osc.overlay:ListOverlay",
            "cloudlet_overlay_download = client.osc.overlay:DownloadOverlay",
            "cloudlet_synthesis = client.osc.synthesis:SynthesizeServer",
            "cloudlet_handoff = client.osc.handoff:HandoffServer",
        ],
        "oslo.config.opts": ["cloudlet = cloudlet_compute.nova.conf:list_opts"],
        "oslo.policy.policies": ["cloudlet = cloudlet_api.policies:list_rules"],
    },
)
