"""Bounded-memory helpers of overlay creation: chunks spilled to disk, files read forward.

A ``Spool`` keeps changed chunks in an unlinked file of the work directory and only their
indexes in memory; a ``ForwardReader`` serves 4 KiB reads from a large window that moves
forward through a file, so a pass over a file costs one sequential read; a ``FileFeed`` is
the migration stream source of ``migstream.walk`` that keeps only a window of the file.
"""

import os
import tempfile
from array import array

from cloudlet_compute.errors import FormatError
from cloudlet_compute.format.records import CHUNK_SIZE

WINDOW = 1 << 20
PIECE = 4 << 20


def drop_cache(fd, start, end):
    """Tell the kernel the bytes ``start:end`` of ``fd`` will not be read again."""
    if end > start:
        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)


class ForwardReader:
    """``read(offset)``: the chunk at ``offset`` of a file, from a window read ahead into
    one reused buffer.

    A read at or just past the window moves it forward (one large read); any other miss
    is a single chunk read. ``forget`` drops the cache behind the window.
    """

    def __init__(self, fd, forget=False):
        self.fd, self.forget = fd, forget
        self._start, self._len, self._data = 0, 0, bytearray(WINDOW)

    def read(self, offset, length=CHUNK_SIZE):
        rel = offset - self._start
        if 0 <= rel and rel + length <= self._len:
            return self._data[rel:rel + length]
        if length <= WINDOW and (0 <= rel <= self._len + WINDOW or not self._len):
            if self.forget:
                drop_cache(self.fd, self._start, self._start + self._len)
            self._start, self._len = offset, os.preadv(self.fd, [self._data], offset)
            return self._data[:min(length, self._len)]
        return os.pread(self.fd, length, offset)


class Spool:
    """Chunks ``(index, 4096 bytes)`` appended in order, kept in a file in ``workdir``.

    ``indexes`` is an array; ``len``, iteration (``(index, bytes)`` in order) and
    ``read(i)`` (the bytes of the i-th chunk) read the file back.
    """

    def __init__(self, workdir):
        self._file = tempfile.TemporaryFile(prefix="spool-", dir=workdir)
        self.fd = self._file.fileno()
        self.indexes = array("Q")
        self._pending, self._written = bytearray(), 0
        self._reader = ForwardReader(self.fd)

    def add(self, index, data):
        self.indexes.append(index)
        self._pending += data
        if len(self._pending) >= PIECE:
            self._flush()

    def _flush(self):
        if self._pending:
            os.pwrite(self.fd, self._pending, self._written)
            self._written += len(self._pending)
            self._pending.clear()

    def __len__(self):
        return len(self.indexes)

    def read(self, i):
        self._flush()
        return self._reader.read(i * CHUNK_SIZE)

    def __iter__(self):
        self._flush()
        for first in range(0, len(self.indexes), PIECE // CHUNK_SIZE):
            piece = os.pread(self.fd, PIECE, first * CHUNK_SIZE)
            for n in range(len(piece) // CHUNK_SIZE):
                yield self.indexes[first + n], piece[n * CHUNK_SIZE:(n + 1) * CHUNK_SIZE]

    def close(self):
        self._file.close()


class FileFeed:
    """A stream read from file descriptor ``fd`` in large pieces, keeping only a window.

    ``buf[:end]`` holds the file from offset ``origin`` on (``buf`` is one buffer, reused:
    read into, compacted, grown only if a consumer keeps more than the window);
    ``migstream.walk`` calls ``drop`` as it goes, which forgets what lies before both its
    position and ``keep`` (set by the consumer to the first byte it still needs). ``sha``
    (if not None) hashes every byte read, in file order; ``finish`` reads up to the end.
    The page cache is left alone: the captured image was just written, its pages may still
    be dirty, and dropping them would write out a file that is deleted next.
    """

    def __init__(self, fd, sha, piece=1 << 20, window=8 << 20):
        self.buf = bytearray(window + 2 * piece)
        self.fd, self.sha, self._piece, self._window = fd, sha, piece, window
        self.origin = self.keep = self.end = 0
        self.drop_at = window
        self.eof = False

    def _fill(self):
        if self.eof:
            return False
        if self.end + self._piece > len(self.buf):
            self.buf.extend(bytes(len(self.buf)))
        with memoryview(self.buf) as view, view[self.end:self.end + self._piece] as room:
            n = os.preadv(self.fd, [room], self.origin + self.end)
            if self.sha is not None:
                self.sha.update(room[:n])
        if not n:
            self.eof = True
            return False
        self.end += n
        return True

    def fill(self, end):
        """Read up to file offset ``end`` (or the end of the file); False if it ends first."""
        while self.origin + self.end < end:
            if not self._fill():
                return False
        return True

    def need(self, pos, length, what):
        if pos + length > self.end and not self.fill(self.origin + pos + length):
            raise FormatError("migration stream truncated: expected %d bytes of %s at offset "
                              "%d, got %d" % (length, what, self.origin + pos,
                                              max(0, self.end - pos)))

    def find(self, pattern, start, end):
        while True:
            found = self.buf.find(pattern, start, min(end, self.end))
            if found >= 0 or self.end >= end or not self._fill():
                return found

    def drop(self, pos):
        """Forget ``buf`` before ``pos`` and ``keep``; return how many bytes went."""
        n = min(pos, self.keep - self.origin)
        if n < self._window // 2:
            self.drop_at = pos + self._window // 2
            return 0
        self.buf[:self.end - n] = self.buf[n:self.end]
        self.origin += n
        self.end -= n
        self.drop_at = pos - n + self._window
        return n

    def finish(self):
        """Read the rest of the file."""
        while self._fill():
            pass

    def tail(self, start):
        """The bytes read from file offset ``start`` (still in the window) to the end."""
        return bytes(self.buf[start - self.origin:self.end])
