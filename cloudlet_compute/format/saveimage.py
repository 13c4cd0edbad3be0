"""libvirt save image header (libvirt 9 ``qemu_saveimage.h``, format "raw").

Layout (little-endian, 92 bytes, then ``data_len`` bytes of data, then the QEMU stream)::

    offset size field
    0      16   magic         "LibvirtQemudSave" ("LibvirtQemudPart" while being written)
    16     4    version       2
    20     4    data_len      bytes of data after the header (XML, cookie, NUL padding)
    24     4    was_running   1 if the domain runs after restore
    28     4    compressed    0 = raw (the only format read here)
    32     4    cookie_offset where the cookie XML starts inside data
    36     56   unused        14 x u32, zero
    92     data_len           domain XML, NUL, cookie XML, NUL, NUL padding
"""

import struct

from cloudlet_compute.errors import FormatError

MAGIC = b"LibvirtQemudSave"
MAGIC_PARTIAL = b"LibvirtQemudPart"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (2,)
HEADER = struct.Struct("<16s5I56x")
PADDING = 64 << 10    # what libvirt leaves after the XML so it can be edited in place


class SaveHeader:
    """The libvirt header and XML of a save image."""

    def __init__(self, xml, cookie, was_running=1, data_len=0):
        self.xml = xml
        self.cookie = cookie
        self.was_running = was_running
        self.data_len = data_len

    @property
    def stream_offset(self):
        """File offset of the QEMU migration stream."""
        return HEADER.size + self.data_len

    @classmethod
    def parse(cls, buf):
        """Parse the header at the start of ``buf`` (bytes, mmap or memoryview)."""
        if len(buf) < HEADER.size:
            raise FormatError("save image truncated: expected %d header bytes at offset 0, got %d"
                              % (HEADER.size, len(buf)))
        magic, version, data_len, was_running, compressed, cookie_offset = HEADER.unpack_from(buf)
        if magic == MAGIC_PARTIAL:
            raise FormatError("save image is incomplete (libvirt did not finish writing it)")
        if magic != MAGIC:
            raise FormatError("not a libvirt save image (magic %r)" % magic)
        if version not in SUPPORTED_VERSIONS:
            raise FormatError("libvirt save image version %d is not supported" % version)
        if compressed:
            raise FormatError("compressed save images (format %d) are not supported; set "
                              "save_image_format = \"raw\" in qemu.conf" % compressed)
        if HEADER.size + data_len > len(buf):
            raise FormatError("save image truncated: expected %d bytes of XML at offset %d, got %d"
                              % (data_len, HEADER.size, len(buf) - HEADER.size))
        data = bytes(buf[HEADER.size:HEADER.size + data_len])
        if not 0 < cookie_offset <= data_len:
            cookie_offset = data_len
        xml = data[:cookie_offset].split(b"\0", 1)[0]
        cookie = data[cookie_offset:].split(b"\0", 1)[0]
        try:
            return cls(xml.decode(), cookie.decode(), was_running, data_len)
        except UnicodeDecodeError:
            raise FormatError("save image XML is not UTF-8") from None

    def encode(self, xml=None):
        """Return header + data for ``xml`` (default: the parsed XML).

        Re-encoding the parsed XML gives back the original bytes; a longer XML grows the
        data area by libvirt's usual padding.
        """
        xml = (self.xml if xml is None else xml).encode() + b"\0"
        cookie = self.cookie.encode() + b"\0" if self.cookie else b""
        used = len(xml) + len(cookie)
        data_len = self.data_len if used <= self.data_len else used + PADDING
        data = (xml + cookie).ljust(data_len, b"\0")
        cookie_offset = len(xml) if cookie else 0
        return HEADER.pack(MAGIC, FORMAT_VERSION, data_len, self.was_running, 0,
                           cookie_offset) + data
