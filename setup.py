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
    install_requires=["msgpack>=1.0", "zstandard>=0.22", "libvirt-python>=9.0",
                      "requests>=2.28"],
    entry_points={
        "console_scripts": [
            "cloudlet = cloudlet_compute.cli:main",
            "cloudlet-nova-shim = cloudlet_compute.nova.shim:main",
        ],
        "oslo.config.opts": ["cloudlet = cloudlet_compute.nova.conf:list_opts"],
        "oslo.policy.policies": ["cloudlet = cloudlet_api.policies:list_rules"],
    },
)
