"""Image data to and from Glance: uploads that report progress, downloads that are
written sparse and checked against Glance's hash."""

import hashlib
import os

from client.core import waiting
from client.core.errors import api_errors
from cloudlet_compute.errors import FormatError

DOWNLOAD_PIECE = 1 << 20


class _ReadProgress:
    """A file whose reads are reported to ``progress``."""

    def __init__(self, path, progress):
        self._file = open(path, "rb")
        self._progress = progress

    def read(self, size=-1):
        data = self._file.read(size)
        if self._progress:
            self._progress.update(len(data))
        return data

    def close(self):
        self._file.close()


def upload_image(conn, name, path, properties, visibility, progress=None, disk_format="raw"):
    """Create image ``name`` (``disk_format`` raw, or aki/ari with the same container
    format) from file ``path`` with ``properties``; return it once it is active."""
    data = _ReadProgress(path, progress)
    try:
        image = conn.image.create_image(
            name=name, data=data, disk_format=disk_format,
            container_format="bare" if disk_format == "raw" else disk_format,
            visibility=visibility, allow_duplicates=True, **properties)
    finally:
        data.close()
    return waiting.wait_image_active(conn, image.id)


def download_image(conn, image, path, progress):
    """Stream ``image``'s data into ``path`` (sparse), checking Glance's hash."""
    algo = image.hash_algo or "md5"
    expected = image.hash_value if image.hash_algo else image.checksum
    digest = hashlib.new(algo)
    zero = bytes(DOWNLOAD_PIECE)
    with api_errors():
        resp = conn.image.download_image(image, stream=True)
    try:
        with open(path, "wb") as out:
            for piece in resp.iter_content(DOWNLOAD_PIECE):
                digest.update(piece)
                if piece == zero[:len(piece)]:
                    out.seek(len(piece), os.SEEK_CUR)
                else:
                    out.write(piece)
                progress.update(len(piece))
            out.truncate()
    finally:
        resp.close()
    if expected and digest.hexdigest() != expected:
        raise FormatError("image %s downloaded with %s %s, Glance says %s"
                          % (image.id, algo, digest.hexdigest(), expected))
