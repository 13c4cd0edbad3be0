"""OpenStack++ Horizon plugin: the "Cloudlet" panel of the Project dashboard.

Enable it with ``enabled/_1920_project_cloudlet_panel.py`` (copy or link it into
``openstack_dashboard/local/enabled/``; see doc/horizon.md). ``api.cloudlet`` is the only
module that talks to OpenStack; ``content.cloudlet`` is the panel.
"""
