"""The client core: what ``cloudlet-client``, ``openstack cloudlet`` and the Horizon panel do.

Small modules over one openstacksdk ``Connection`` (public APIs only: Glance for the image
model, Nova for servers and the ``os-cloudlet`` actions):

``errors``     error classes, SDK/keystoneauth translation, nova error messages
``sessions``   the command lines' connection (clouds.yaml / ``OS_*``) and
               server actions
``lookups``    servers, images by cloudlet type, base VM images, flavors, networks
``waiting``    polling servers and images, progress bars, cleanup of unfinished work
``transfer``   image data up and down (checked, sparse)
``bases``      base VMs: list, import, export, resume, create, delete
``overlays``   VM overlays: list, create, download
``synthesis``  VM synthesis from an overlay URL
``handoff``    VM handoff to another cloud, or its residue as an overlay image
``options``    the options both command lines share
"""
