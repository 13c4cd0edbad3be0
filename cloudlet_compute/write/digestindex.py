"""A compact index of a base's page or chunk digests: SHA-256 -> first position.

Eight bytes a digest instead of a dict entry (about 130 bytes with its key): one sorted
array of u64 keys, each a digest's leading bits above its position. A lookup bisects the
keys, then confirms a candidate against the full digest. Built a piece at a time, so the
transient lists stay bounded whatever the number of digests.
"""

import bisect
import heapq
import os
import struct
from array import array

DIGEST = 32
PIECE = 1 << 18            # digests sorted at a time
PREFIX = struct.Struct("=Q")


class DigestIndex:
    """Position of the first of ``count`` digests equal to a digest, or None.

    ``pieces`` yields ``(first position, concatenated digests)``; ``digest_at(j)`` returns
    digest ``j`` again (to confirm a candidate); a digest equal to ``skip`` is not indexed.
    """

    def __init__(self, pieces, count, digest_at, skip=None):
        self.mask = (1 << max(1, (count - 1).bit_length())) - 1
        self.high = ~self.mask & 0xFFFFFFFFFFFFFFFF
        self.digest_at = digest_at
        sorted_pieces = []
        for first, data in pieces:
            with memoryview(data) as view, view.cast("Q") as words:
                keys = [(p & self.high) | (first + k) for k, p in enumerate(words[0::4])
                        if skip is None or data[DIGEST * k:DIGEST * k + DIGEST] != skip]
            keys.sort()
            sorted_pieces.append(array("Q", keys))
        self.keys = (sorted_pieces[0] if len(sorted_pieces) == 1 else
                     array("Q", heapq.merge(*sorted_pieces)))

    @classmethod
    def of_bytes(cls, digests):
        """The index of digests held in memory."""
        view = memoryview(digests)
        step = PIECE * DIGEST
        return cls(((i // DIGEST, view[i:i + step]) for i in range(0, len(view), step)),
                   len(view) // DIGEST, lambda j: bytes(view[DIGEST * j:DIGEST * j + DIGEST]))

    @classmethod
    def of_file(cls, path, skip=None):
        """The index of the digests file ``path``, read a piece at a time; candidates are
        confirmed by reading the file again."""
        def pieces():
            with open(path, "rb") as f:
                for first in range(0, count, PIECE):
                    yield first, f.read(min(PIECE, count - first) * DIGEST)

        def digest_at(j):
            with open(path, "rb") as f:
                return os.pread(f.fileno(), DIGEST, DIGEST * j)

        count = os.path.getsize(path) // DIGEST
        return cls(pieces(), count, digest_at, skip)

    def find(self, digest):
        prefix = PREFIX.unpack_from(digest)[0] & self.high
        keys, i = self.keys, bisect.bisect_left(self.keys, prefix)
        while i < len(keys) and keys[i] & self.high == prefix:
            j = keys[i] & self.mask
            if self.digest_at(j) == digest:
                return j
            i += 1
        return None
