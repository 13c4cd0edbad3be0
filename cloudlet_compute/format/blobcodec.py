"""Self-describing compression of blobs: one id byte, then the codec's own stream.

| id | codec | stream |
|----|-------|--------|
| 0  | none  | the bytes as they are |
| 1  | xz    | an xz container (``lzma.FORMAT_XZ``), integrity check CRC64 |
| 2  | zstd  | a zstd frame with the content size and checksum flags set |

The id makes a blob readable without the meta, and lets one overlay mix codecs.
Default zstd level 3, chosen with ``bench/codec_choice.py`` on the demo workload: every codec and
level came within 0.8 % in size (the workload is mostly random data), xz decompressed ~10x
slower than zstd, and zstd 19 spent 8 s packing for 0.5 % (``bench/README.md``).
"""

import lzma

import zstandard

from cloudlet_compute.errors import FormatError

NONE, XZ, ZSTD = 0, 1, 2
NAMES = {NONE: "none", XZ: "xz", ZSTD: "zstd"}
IDS = {name: cid for cid, name in NAMES.items()}
DEFAULT_LEVELS = {NONE: 0, XZ: 6, ZSTD: 3}
DEFAULT_CODEC = ZSTD
# Memory the xz decoder may take: preset 9 (64 MiB dictionary) needs 65 MiB; a stream whose
# header asks for more (up to 1.5 GiB) is refused before liblzma allocates it.
XZ_MEMLIMIT = 128 << 20


def codec_id(name):
    """Return the id of the codec called ``name``; raise ``FormatError`` if unknown."""
    try:
        return IDS[name]
    except KeyError:
        raise FormatError("unknown codec %r (known: %s)" % (name, ", ".join(IDS))) from None


def compress(data, codec=DEFAULT_CODEC, level=None):
    """Return ``data`` compressed, prefixed with the codec id byte."""
    level = DEFAULT_LEVELS[codec] if level is None else level
    if codec == NONE:
        body = bytes(data)
    elif codec == XZ:
        body = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=level)
    elif codec == ZSTD:
        body = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                        write_content_size=True).compress(data)
    else:
        raise FormatError("unknown codec id %d" % codec)
    return bytes([codec]) + body


def decompress(blob, max_size):
    """Return the plaintext of a codec-prefixed ``blob``.

    ``max_size`` bounds the output: a blob that would expand beyond it is rejected
    instead of exhausting memory.
    """
    if not blob:
        raise FormatError("empty blob: expected a codec id byte")
    codec, body = blob[0], memoryview(blob)[1:]
    try:
        if codec == NONE:
            data = bytes(body)
        elif codec == XZ:
            dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
            data = dec.decompress(body, max_length=max_size + 1)
            if not dec.eof:
                raise FormatError("xz stream is truncated or larger than %d bytes" % max_size)
            if dec.unused_data:
                raise FormatError("%d bytes of garbage after the xz stream" % len(dec.unused_data))
        elif codec == ZSTD:
            declared = zstandard.frame_content_size(body)
            if declared < 0 or declared > max_size:
                raise FormatError("zstd frame declares %d bytes, more than the %d allowed"
                                  % (declared, max_size))
            data = zstandard.ZstdDecompressor().decompress(body)
        else:
            raise FormatError("unknown codec id %d" % codec)
    except (lzma.LZMAError, zstandard.ZstdError) as exc:
        raise FormatError("%s blob does not decompress: %s" % (NAMES[codec], exc)) from exc
    if len(data) > max_size:
        raise FormatError("blob expands beyond its declared %d bytes" % max_size)
    return data
