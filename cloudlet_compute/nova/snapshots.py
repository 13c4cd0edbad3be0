"""What nova's snapshot, backup and shelve images of a cloudlet server carry.

nova-api creates a snapshot's record with the properties of the image the server was
booted from (copied from system metadata), so a snapshot of a server resumed from a base
VM would be labelled a base disk, and booting it would resume the pristine base. These
images are the server's own disk: the labels are dropped before the data is uploaded. Only
the images our import or ``cloudlet-base`` made are base VMs.

A shelve of a cloudlet server stores its VM overlay instead (memory and disk), labelled as
an overlay that links the base images it needs, so unshelve synthesizes it.
"""

from cloudlet_compute import imagemodel as model
from cloudlet_compute.nova import glance

# Every property that makes an image part of the cloudlet model.
LABELS = frozenset((model.PROPERTY_CLOUDLET, model.PROPERTY_TYPE, model.PROPERTY_BASE_ID,
                    model.BASE_DISK) + model.LINKED_TYPES)


def _unlabelled(context, image_api, image_id):
    """The properties of ``image_id`` without the cloudlet labels, and whether it had any."""
    props = image_api.get(context, image_id).get('properties') or {}
    return {key: value for key, value in props.items() if key not in LABELS}, \
        not LABELS.isdisjoint(props)


def drop_labels(context, image_api, image_id):
    """Remove the cloudlet properties the record of ``image_id`` inherited."""
    kept, labelled = _unlabelled(context, image_api, image_id)
    if labelled:
        image_api.update(context, image_id, {'properties': kept}, purge_props=True)


def upload_shelved_overlay(context, image_api, image_id, path, instance, base_id):
    """Make image ``image_id`` (nova's shelve record) the overlay at ``path``: an overlay of
    ``base_id`` that names the base's disk (the image the server was booted from) and memory
    images, so unshelve can fetch the base where it is missing."""
    props, _labelled = _unlabelled(context, image_api, image_id)
    props.update({model.PROPERTY_CLOUDLET: 'True', model.PROPERTY_TYPE: model.OVERLAY,
                  model.PROPERTY_BASE_ID: base_id})
    props.update(glance.base_links(instance))
    # nova's shelve record has no formats yet (its own snapshot sets them with the data).
    meta = {'disk_format': 'raw', 'container_format': 'bare', 'properties': props}
    with open(path, 'rb') as data:
        return image_api.update(context, image_id, meta, data=data, purge_props=True)
