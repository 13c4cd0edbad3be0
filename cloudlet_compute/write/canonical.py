"""The capture's rewrite of a live migration stream with each page once, file to file.

What ``migstream.canonical`` returns for a stream in memory, written to a file in bounded
memory: one forward pass parses the stream through a window, keeping for every guest page
only where its last copy is (8 bytes a page: one array per RAM block); a second pass reads
the last copies in address order and writes them out.
"""

import os
from array import array

from cloudlet_compute.format import migstream
from cloudlet_compute.format.records import CHUNK_SIZE
from cloudlet_compute.write.spool import FileFeed, ForwardReader

UNSENT = -2       # in the per-block arrays: a page no record sent (-1: sent as zeros)


def rewrite(src_path, out, start=0):
    """Write to ``out`` (a binary file) the stream at ``start`` of file ``src_path`` with
    every guest page once, in address order, the last copy of each (what a loader keeps)."""
    low = (1 << 48) - 1
    with open(src_path, "rb") as f:
        feed = FileFeed(f.fileno(), None)
        for event in migstream.walk(feed, start):
            if event[0] == "page":
                _, key, pos = event
                latest[key >> 48][(key & low) // CHUNK_SIZE] = pos
            elif event[0] == "setup":
                _, blocks, section_id, setup_end = event
                latest = [array("q", [UNSENT]) * -(-length // CHUNK_SIZE)
                          for _, length in blocks]
            else:
                ram_end = event[1]
            feed.keep = feed.origin + feed.end
        feed.finish()
        tail = feed.tail(ram_end)
        migstream.check_end(tail, 0)
        reader = ForwardReader(f.fileno())

        def pages():
            for block, sent in enumerate(latest):
                for page, pos in enumerate(sent):
                    if pos != UNSENT:
                        yield (block << 48 | page * CHUNK_SIZE,
                               reader.read(pos) if pos >= 0 else None)

        setup = os.pread(f.fileno(), setup_end - start, start)
        for piece in migstream.write_canonical(setup, section_id, [name for name, _ in blocks],
                                               pages(), tail):
            out.write(piece)
