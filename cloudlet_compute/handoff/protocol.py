"""What both sides of a VM handoff agree on beyond the channel (``doc/handoff.md``): the
header's protocol version and the digest of the memory state that the END frame carries.
"""

import hashlib
import struct

PROTOCOL_VERSION = 1
KEY = struct.Struct(">Q")


def memory_digest(setup, page_digests, tail):
    """Digest of a VM's memory state: the stream's setup, the SHA-256 of the latest copy of
    every guest page (zeros included) in address order, and its device state."""
    h = hashlib.sha256(b"openstackpp-memory-state-v1")
    h.update(hashlib.sha256(setup).digest())
    for key in sorted(page_digests):
        h.update(KEY.pack(key))
        h.update(page_digests[key])
    h.update(hashlib.sha256(tail).digest())
    return h.hexdigest()
