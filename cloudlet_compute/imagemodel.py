"""Names of the Glance model of base VMs and VM overlays (original-system A.7).

A base VM is four linked images: the disk (uploaded last; it names the other three in
its properties), the memory image and the two hash lists. A base made from a
direct-kernel-boot domain also has a kernel (``aki``) and a ramdisk (``ari``) image, which
its disk image names with nova's own ``kernel_id``/``ramdisk_id`` (and ``os_command_line``),
so that nova can boot the disk itself (hard reboot, stop/start, rebuild). A VM overlay is
one image.
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
BASE_KERNEL = 'cloudlet_base_kernel'
BASE_RAMDISK = 'cloudlet_base_ramdisk'

# The disk image links the other three by these properties (the type name is the key).
LINKED_TYPES = (BASE_MEMORY, BASE_DISK_HASH, BASE_MEMORY_HASH)
# The disk image names the kernel and ramdisk images by nova's properties (type -> key),
# and gives the kernel command line as nova's os_command_line; their Glance formats.
BOOT_LINKS = {BASE_KERNEL: 'kernel_id', BASE_RAMDISK: 'ramdisk_id'}
PROPERTY_CMDLINE = 'os_command_line'
BOOT_FORMATS = {BASE_KERNEL: 'aki', BASE_RAMDISK: 'ari'}
# Image name suffixes, as the original's Import Base used them (and ours for the kernel).
SUFFIXES = {BASE_DISK: '-disk', BASE_MEMORY: '-memory',
            BASE_DISK_HASH: '-diskhash', BASE_MEMORY_HASH: '-memhash',
            BASE_KERNEL: '-kernel', BASE_RAMDISK: '-ramdisk'}
# Keys of the cloudlet-base response, per image type; the clients' import output has the
# kernel and ramdisk images too.
RESPONSE_KEYS = {BASE_DISK: 'base-disk', BASE_MEMORY: 'base-memory',
                 BASE_DISK_HASH: 'base-disk-hash', BASE_MEMORY_HASH: 'base-memory-hash'}
IMPORT_KEYS = dict(RESPONSE_KEYS, **{BASE_KERNEL: 'base-kernel', BASE_RAMDISK: 'base-ramdisk'})

# Instance metadata keys that ask for VM synthesis (POST /servers): the overlay at a URL, or
# a VM overlay image in Glance (fetched through Glance with the user's token).
METADATA_OVERLAY_URL = 'overlay_url'
METADATA_OVERLAY_IMAGE = 'overlay_image'
# Nova copies image properties into the instance's system_metadata with this prefix.
SYSMETA_PREFIX = 'image_'



def boot_properties(boot_ids, cmdline):
    """nova's properties of a base disk image whose kernel and ramdisk are the images
    ``boot_ids`` (``{type: id}``) booted with ``cmdline``; {} for a base without them."""
    props = {BOOT_LINKS[image_type]: image_id for image_type, image_id in boot_ids.items()}
    if props and cmdline:
        props[PROPERTY_CMDLINE] = cmdline
    return props


# Which file of a base VM (``bases.BaseVM.image_files()``) each image holds.
BASE_FILES = {BASE_DISK: "disk.raw", BASE_MEMORY: "memory.img",
              BASE_DISK_HASH: "disk.digests", BASE_MEMORY_HASH: "memory.pages"}
# ... and which boot file (``bootfiles.MEMBERS``), for a base that has them.
BOOT_FILES = {BASE_KERNEL: "kernel", BASE_RAMDISK: "initrd"}

# Instance metadata of a server created by a VM handoff, at the destination: where the source
# listens, the one-time secret for this server, and the source server's id.
METADATA_HANDOFF_SOURCE = 'cloudlet_handoff_source'
METADATA_HANDOFF_SECRET = 'cloudlet_handoff_secret'
METADATA_HANDOFF_FROM = 'cloudlet_handoff_from'
# Server metadata: why its last cloudlet action (base, overlay, handoff) failed, for its users
# (nova shows faults only of ERROR servers, event details only to admins); the API clears it
# when the next action begins.
METADATA_TASK_ERROR = 'cloudlet_error'
