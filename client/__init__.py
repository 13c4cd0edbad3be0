"""OpenStack++ clients: ``cloudlet_client.py`` and the ``openstack cloudlet`` plugin."""
