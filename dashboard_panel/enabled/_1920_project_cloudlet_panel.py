# The "Cloudlet" panel in the Compute group of the Project dashboard (OpenStack++).
# Copy or link this file into openstack_dashboard/local/enabled/ to enable it.
from dashboard_panel.exceptions import CloudletAPIError, CloudletNotFound

PANEL = 'cloudlet'
PANEL_DASHBOARD = 'project'
PANEL_GROUP = 'compute'
ADD_PANEL = 'dashboard_panel.content.cloudlet.panel.Cloudlet'
ADD_INSTALLED_APPS = ['dashboard_panel']
ADD_EXCEPTIONS = {'recoverable': (CloudletAPIError,), 'not_found': (CloudletNotFound,)}
