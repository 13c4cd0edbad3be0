"""``client.core.bases`` against a fake Glance: a base with a kernel is six images (the four
linked ones plus ``aki``/``ari`` kernel and ramdisk images the disk names with nova's
``kernel_id``/``ramdisk_id``/``os_command_line``); list shows one base, delete removes all of
its own images, export rebuilds the package with the kernel. Old packages stay four images."""

import hashlib
import io
import itertools
import json
import zipfile

import pytest

from client.core import bases as core
from cloudlet_compute import bases
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import FormatError
from tests.compute.test_base_kernel import CMDLINE, INITRD, KERNEL, boot_files, make_base

# What openstacksdk's Image makes attributes; anything else lands in ``properties``.
KNOWN = ("min_ram", "min_disk", "kernel_id", "ramdisk_id", "os_command_line")


class FakeImage:
    def __init__(self, image_id, name, data, disk_format, container_format, visibility, attrs):
        self.id, self.name, self.status, self.size = image_id, name, "active", len(data)
        self.disk_format, self.container_format = disk_format, container_format
        self.visibility, self.data = visibility, data
        self.hash_algo, self.hash_value = "sha512", hashlib.sha512(data).hexdigest()
        self.checksum = None
        for key in KNOWN:
            setattr(self, key, attrs.pop(key, None))
        self.properties = attrs


class Response:
    def __init__(self, data):
        self._data = io.BytesIO(data)

    def iter_content(self, size):
        return iter(lambda: self._data.read(size), b"")

    def close(self):
        pass


class FakeGlance:
    def __init__(self):
        self.store, self._ids = {}, (str(n) for n in itertools.count(1))

    def create_image(self, name, data, disk_format, container_format, visibility,
                     allow_duplicates, **attrs):
        image = FakeImage(next(self._ids), name, data.read(), disk_format, container_format,
                          visibility, dict(attrs))
        self.store[image.id] = image
        return image

    def get_image(self, image_id):
        return self.store[image_id]

    def find_image(self, ref, ignore_missing=True):
        return self.store.get(ref) or next((i for i in self.store.values() if i.name == ref),
                                           None)

    def images(self, **query):
        return list(self.store.values())

    def delete_image(self, image_id, ignore_missing=True):
        self.store.pop(image_id, None)

    def download_image(self, image, stream=True):
        return Response(image.data)


class FakeConn:
    def __init__(self):
        self.image = FakeGlance()


def export_package(tmp_path, boot=True, cmdline=CMDLINE):
    """A base package of a synthetic base, with the kernel and initrd if ``boot``."""
    src = tmp_path / "src"
    src.mkdir()
    store = bases.BaseStore(str(tmp_path / "home"))
    files = boot_files(src) if boot else None
    if files:
        files.cmdline = cmdline
    base = make_base(store, src, files)
    path = str(tmp_path / "base.zip")
    store.export(base.id, path)
    return path, base.id


def images_by_type(conn):
    return {i.properties.get(model.PROPERTY_TYPE): i for i in conn.image.store.values()}


def test_import_with_kernel_makes_six_linked_images(tmp_path):
    package, base_id = export_package(tmp_path)
    conn = FakeConn()
    ids = core.import_base_package(conn, package, name="kb", workdir=str(tmp_path))
    assert set(ids) == set(model.LINKED_TYPES) | {model.BASE_DISK, model.BASE_KERNEL,
                                                  model.BASE_RAMDISK}
    by_type = images_by_type(conn)
    disk = by_type[model.BASE_DISK]
    assert (disk.kernel_id, disk.ramdisk_id, disk.os_command_line) == (
        ids[model.BASE_KERNEL], ids[model.BASE_RAMDISK], CMDLINE)
    for image_type, data, fmt in ((model.BASE_KERNEL, KERNEL, "aki"),
                                  (model.BASE_RAMDISK, INITRD, "ari")):
        image = by_type[image_type]
        assert (image.data, image.disk_format, image.container_format) == (data, fmt, fmt)
        assert image.name == "kb" + model.SUFFIXES[image_type]
        assert image.properties[model.PROPERTY_BASE_ID] == base_id
    assert [row["id"] for row in core.list_bases(conn)] == [disk.id]


def test_export_rebuilds_the_package_with_the_kernel(tmp_path):
    package, base_id = export_package(tmp_path)
    conn = FakeConn()
    ids = core.import_base_package(conn, package, name="kb", workdir=str(tmp_path))
    out = str(tmp_path / "exported.zip")
    assert core.export_base(conn, ids[model.BASE_DISK], out)["base_id"] == base_id
    with zipfile.ZipFile(package) as before, zipfile.ZipFile(out) as after:
        assert sorted(after.namelist()) == sorted(before.namelist())
        old, new = (json.loads(z.read("manifest.json")) for z in (before, after))
        for key in ("kernel_sha256", "initrd_sha256", "kernel_size", "cmdline"):
            assert new[key] == old[key]
        assert after.read("kernel") == KERNEL


def test_delete_removes_the_bases_own_images_only(tmp_path):
    package, _ = export_package(tmp_path)
    conn = FakeConn()
    ids = core.import_base_package(conn, package, name="kb", workdir=str(tmp_path))
    core.delete_base(conn, ids[model.BASE_DISK])
    assert conn.image.store == {}

    # A disk image whose kernel_id someone pointed at a kernel of theirs: that one stays.
    ids = core.import_base_package(conn, package, name="kb", workdir=str(tmp_path))
    theirs = conn.image.create_image("their-kernel", io.BytesIO(b"k"), "aki", "aki",
                                     "private", True)
    conn.image.store[ids[model.BASE_DISK]].kernel_id = theirs.id
    core.delete_base(conn, ids[model.BASE_DISK])
    # (the base's own kernel image is no longer named by the disk, so it stays too)
    assert set(conn.image.store) == {theirs.id, ids[model.BASE_KERNEL]}


def test_old_package_is_four_images_without_kernel_properties(tmp_path):
    package, _ = export_package(tmp_path, boot=False)
    conn = FakeConn()
    ids = core.import_base_package(conn, package, name="old", workdir=str(tmp_path))
    assert set(ids) == set(model.LINKED_TYPES) | {model.BASE_DISK}
    disk = conn.image.store[ids[model.BASE_DISK]]
    assert (disk.kernel_id, disk.ramdisk_id, disk.os_command_line) == (None, None, None)
    out = str(tmp_path / "exported.zip")
    core.export_base(conn, disk.id, out)
    with zipfile.ZipFile(out) as zf:
        assert "kernel" not in zf.namelist()


def test_command_line_too_long_for_glance_is_refused_before_any_upload(tmp_path):
    package, _ = export_package(tmp_path, cmdline="console=ttyS0 " + "x" * 300)
    conn = FakeConn()
    with pytest.raises(FormatError) as err:
        core.import_base_package(conn, package, name="long", workdir=str(tmp_path))
    assert str(err.value) == ("the base's kernel command line has 314 characters; Glance's "
                              "os_command_line holds at most 255")
    assert conn.image.store == {}
