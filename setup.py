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
    install_requires=["msgpack>=1.0", "zstandard>=0.22", "libvirt-python>=9.0",
                      "requests>=2.28"],
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
