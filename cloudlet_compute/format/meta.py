"""The overlay meta: a msgpack map describing one VM overlay (``doc/overlay-format.md``).

Readers check every field before anything else is fetched: type, range, and consistency
with the base VM that will be used. A reader aborts on an unknown ``version``.
"""

import re

import msgpack

from cloudlet_compute.errors import FormatError, IntegrityError
from cloudlet_compute.format.records import CHUNK_SIZE

FORMAT = "openstackpp-overlay"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
MEMBER_META = "overlay-meta"
MEMBER_SKELETON = "memory-skeleton"
BLOB_MEMBER = re.compile(r"blob-\d{5}\Z")

MAX_META_SIZE = 16 << 20          # bytes of encoded meta a reader accepts
MAX_BLOB_RAW = 64 << 20           # plaintext bytes per blob (writers aim at 4 MiB)
MAX_DEVICE_STATE = 64 << 20       # non-RAM bytes of a memory image (header, XML, devices)
MAX_BLOBS = 1 << 20
HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def encode(meta):
    """Return the msgpack encoding of ``meta``."""
    return msgpack.packb(meta, use_bin_type=True)


def decode(data):
    """Parse encoded meta and check its structure (not yet against a base)."""
    if len(data) > MAX_META_SIZE:
        raise FormatError("overlay meta is %d bytes, more than %d" % (len(data), MAX_META_SIZE))
    try:
        meta = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=0)
    except (ValueError, msgpack.UnpackException) as exc:
        raise FormatError("overlay meta is not valid msgpack: %s" % exc) from exc
    _check_structure(meta)
    return meta


def _field(mapping, key, kind, where):
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise FormatError("overlay meta: %s%s is missing or not a %s"
                          % (where, key, kind.__name__))
    if kind is int and value < 0:
        raise FormatError("overlay meta: %s%s is negative" % (where, key))
    if key.endswith("sha256") and not HEX64.match(value):
        raise FormatError("overlay meta: %s%s is not a sha256 hex digest" % (where, key))
    return value


def _check_structure(meta):
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FormatError("not an OpenStack++ overlay meta (format field missing)")
    version = meta.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError("overlay format version %r is not supported (supported: %s)"
                          % (version, ", ".join(map(str, SUPPORTED_VERSIONS))))
    _field(meta, "base_vm_sha256", str, "")
    _field(meta, "base_memory_sha256", str, "")
    if _field(meta, "chunk_size", int, "") != CHUNK_SIZE:
        raise FormatError("overlay chunk size %d is not supported" % meta["chunk_size"])
    memory = _field(meta, "memory", dict, "")
    for key in ("image_size", "slots", "skeleton_size", "skeleton_raw_size"):
        _field(memory, key, int, "memory.")
    for key in ("image_sha256", "skeleton_sha256"):
        _field(memory, key, str, "memory.")
    disk = _field(meta, "disk", dict, "")
    _field(disk, "size", int, "disk.")
    _field(disk, "content_sha256", str, "disk.")
    blobs = _field(meta, "blobs", list, "")
    if len(blobs) > MAX_BLOBS:
        raise FormatError("overlay meta lists %d blobs, more than %d" % (len(blobs), MAX_BLOBS))
    for i, blob in enumerate(blobs):
        where = "blobs[%d]." % i
        member = _field(blob, "member", str, where)
        if member != "blob-%05d" % i:
            raise FormatError("overlay meta: blob %d is named %r, expected %r"
                              % (i, member, "blob-%05d" % i))
        for key in ("size", "raw_size", "records"):
            _field(blob, key, int, where)
        _field(blob, "sha256", str, where)
        if blob["raw_size"] > MAX_BLOB_RAW:
            raise FormatError("overlay meta: blob %d claims %d plaintext bytes, more than %d"
                              % (i, blob["raw_size"], MAX_BLOB_RAW))


def check_against_base(meta, base):
    """Check that ``meta`` fits the base VM ``base`` (a ``bases.BaseVM``) before any work."""
    if meta["base_vm_sha256"] != base.id:
        raise IntegrityError("overlay is for base VM %s, not %s"
                             % (meta["base_vm_sha256"], base.id))
    if meta["base_memory_sha256"] != base.memory_sha256:
        raise IntegrityError("overlay expects base memory image %s, the base has %s"
                             % (meta["base_memory_sha256"], base.memory_sha256))
    if meta["disk"]["size"] != base.disk_size:
        raise FormatError("overlay disk size %d differs from the base disk size %d"
                          % (meta["disk"]["size"], base.disk_size))
    memory = meta["memory"]
    limit = base.ram_size + MAX_DEVICE_STATE
    if memory["image_size"] > limit:
        raise FormatError("overlay memory image size %d exceeds the base's RAM plus device "
                          "state (%d)" % (memory["image_size"], limit))
    if memory["slots"] * CHUNK_SIZE > memory["image_size"]:
        raise FormatError("overlay claims %d memory slots, more than its %d-byte image holds"
                          % (memory["slots"], memory["image_size"]))
    if memory["skeleton_raw_size"] > memory["image_size"] + 16 * memory["slots"] + 64:
        raise FormatError("overlay skeleton claims %d bytes, more than the image needs"
                          % memory["skeleton_raw_size"])
