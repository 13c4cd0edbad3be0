"""Names of the Glance model of base VMs and VM overlays (original-system A.7).

A base VM is four linked images: the disk (uploaded last; it names the other three in
its properties), the memory image and the two hash lists. A VM overlay is one image.
Every image carries ``is_cloudlet`` and ``cloudlet_type``; a base's images carry
``base_sha256_uuid``, the base id. Shared by the nova side and the clients; no imports.
"""

PROPERTY_CLOUDLET = 'is_cloudlet'
PROPERTY_TYPE = 'cloudlet_type'
PROPERTY_BASE_ID = 'base_sha256_uuid'

BASE_DISK = 'cloudlet_base_disk'
BASE_MEMORY = 'cloudlet_base_memory'
BASE_DISK_HASH = 'cloudlet_base_disk_hash'
BASE_MEMORY_HASH = 'cloudlet_base_memory_hash'
OVERLAY = 'cloudlet_overlay'

# The disk image links the other three by these properties (the type name is the key).
LINKED_TYPES = (BASE_MEMORY, BASE_DISK_HASH, BASE_MEMORY_HASH)
# Image name suffixes, as the original's Import Base used them.
SUFFIXES = {BASE_DISK: '-disk', BASE_MEMORY: '-memory',
            BASE_DISK_HASH: '-diskhash', BASE_MEMORY_HASH: '-memhash'}
# Keys of the cloudlet-base response, per image type.
RESPONSE_KEYS = {BASE_DISK: 'base-disk', BASE_MEMORY: 'base-memory',
                 BASE_DISK_HASH: 'base-disk-hash', BASE_MEMORY_HASH: 'base-memory-hash'}

# Instance metadata keys that ask for VM synthesis (POST /servers): the overlay at a URL, or
# a VM overlay image in Glance (fetched through Glance with the user's token).
METADATA_OVERLAY_URL = 'overlay_url'
METADATA_OVERLAY_IMAGE = 'overlay_image'
# Nova copies image properties into the instance's system_metadata with this prefix.
SYSMETA_PREFIX = 'image_'

# Which file of a base VM (``bases.BaseVM.files()``) each image holds.
BASE_FILES = {BASE_DISK: "disk.raw", BASE_MEMORY: "memory.img",
              BASE_DISK_HASH: "disk.digests", BASE_MEMORY_HASH: "memory.pages"}

# Instance metadata of a server created by a VM handoff, at the destination: where the source
# listens, the one-time secret for this server, and the source server's id.
METADATA_HANDOFF_SOURCE = 'cloudlet_handoff_source'
METADATA_HANDOFF_SECRET = 'cloudlet_handoff_secret'
METADATA_HANDOFF_FROM = 'cloudlet_handoff_from'
# Source server metadata: why its last handoff failed (event details are admin-only in nova).
METADATA_HANDOFF_ERROR = 'cloudlet_handoff_error'
