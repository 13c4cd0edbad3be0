"""The ``openstack cloudlet ...`` commands (an openstackclient plugin)."""
