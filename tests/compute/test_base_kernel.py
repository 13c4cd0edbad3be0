"""Bases of direct-kernel-boot domains carry their kernel, initrd and command line: in the
store (read-only, hashed), in the base package (checked on import) and in the XML of the
domains restored from them. Synthetic bases, no libvirt."""

import hashlib
import json
import os
import stat
import warnings
import xml.etree.ElementTree as ET
import zipfile

import pytest

from cloudlet_compute import bases, bootfiles
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import FormatError, IntegrityError
from cloudlet_compute.format.saveimage import SaveHeader
from cloudlet_compute.host import domxml, instances
from bench import synthetic

KERNEL = b"\x7fkernel image " * 1000
INITRD = b"initramfs " * 3000
CMDLINE = "console=ttyS0 panic=-1"

DOMAIN = """<domain type='qemu'><name>src</name><memory unit='MiB'>1</memory>
<os><type arch='x86_64'>hvm</type>
<kernel>{dir}/vmlinuz</kernel><initrd>{dir}/initrd.img</initrd><cmdline>{cmdline}</cmdline>
</os><devices><disk type='file' device='disk'><source file='{dir}/disk.qcow2'/>
<target dev='vda'/></disk></devices></domain>"""


def boot_files(directory, kernel=KERNEL, initrd=INITRD):
    paths = {}
    for member, data in (("kernel", kernel), ("initrd", initrd)):
        if data is not None:
            paths[member] = str(directory / member)
            (directory / member).write_bytes(data)
    return bootfiles.BootFiles(paths, CMDLINE)


def make_base(store, directory, boot):
    """A synthetic base whose memory image is of a domain booting ``directory``'s kernel."""
    base_pages, base_disk, _, _ = synthetic.world()
    disk, memory = directory / "disk.raw", directory / "memory.img"
    disk.write_bytes(base_disk)
    zero = bytes(synthetic.PAGE)
    memory.write_bytes(SaveHeader(DOMAIN.format(dir=directory, cmdline=CMDLINE), "<cookie/>")
                       .encode() + b"".join(synthetic.stream_pieces(
                           synthetic.RAM_SIZE, lambda addr: base_pages.get(addr, zero))))
    return store.add(str(disk), str(memory), "kernel-base", boot=boot)


@pytest.fixture
def kernel_base(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    store = bases.BaseStore(str(tmp_path / "home"))
    return make_base(store, src, boot_files(src))


def test_store_keeps_read_only_hashed_copies(kernel_base):
    base = kernel_base
    assert sorted(base.boot_paths) == ["initrd", "kernel"]
    for member, data in (("kernel", KERNEL), ("initrd", INITRD)):
        path = base.boot_paths[member]
        assert os.path.dirname(path) == base.path
        with open(path, "rb") as f:
            assert f.read() == data
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
        assert base.manifest[member + "_sha256"] == hashlib.sha256(data).hexdigest()
        assert base.manifest[member + "_size"] == len(data)
    assert base.cmdline == CMDLINE
    assert base.image_files()[model.BASE_KERNEL] == base.boot_paths["kernel"]
    assert base.image_files()[model.BASE_RAMDISK] == base.boot_paths["initrd"]


def test_base_without_kernel_is_unchanged(tmp_path):
    base = synthetic.make_base(bases.BaseStore(str(tmp_path / "home")), str(tmp_path))
    assert base.boot_paths == {} and base.cmdline is None
    assert not {"kernel", "initrd"} & set(os.listdir(base.path))
    assert set(base.image_files()) == set(model.BASE_FILES)
    assert not bootfiles.hashed_keys(base.manifest)


def test_copy_from_domain(tmp_path):
    (tmp_path / "vmlinuz").write_bytes(KERNEL)
    (tmp_path / "initrd.img").write_bytes(INITRD)
    work = tmp_path / "work"
    work.mkdir()
    boot = bootfiles.copy_from_domain(DOMAIN.format(dir=tmp_path, cmdline=CMDLINE), str(work))
    assert boot.cmdline == CMDLINE
    assert {m: open(p, "rb").read() for m, p in boot.paths.items()} == {
        "kernel": KERNEL, "initrd": INITRD}
    assert bootfiles.copy_from_domain(synthetic.XML, str(work)) is None

    os.unlink(tmp_path / "initrd.img")
    with pytest.raises(bootfiles.NotFoundError) as err:
        bootfiles.copy_from_domain(DOMAIN.format(dir=tmp_path, cmdline=CMDLINE), str(work))
    assert str(err.value) == ("the domain's initrd initrd.img cannot be read: "
                              "No such file or directory")


def test_restored_domain_boots_the_stores_copies(kernel_base, tmp_path):
    xml = DOMAIN.format(dir="/gone/guest", cmdline=CMDLINE)
    placement = instances.Placement("cl-restored", str(tmp_path / "inst"))
    root = ET.fromstring(placement.domain_xml(xml, kernel_base))
    assert root.findtext("os/kernel") == kernel_base.boot_paths["kernel"]
    assert root.findtext("os/initrd") == kernel_base.boot_paths["initrd"]
    assert root.findtext("os/cmdline") == CMDLINE
    assert root.findtext("os/type") == "hvm"
    assert domxml.base_id_of(ET.tostring(root, encoding="unicode")) == kernel_base.id


def test_with_boot_files_edits_only_kernel_domains():
    xml = DOMAIN.format(dir="/a", cmdline=CMDLINE)
    only_kernel = domxml.with_boot_files(xml, kernel="/b/kernel")
    assert domxml.boot_files(only_kernel) == {"kernel": "/b/kernel", "initrd": "/a/initrd.img",
                                              "cmdline": CMDLINE}
    no_initrd = xml.replace("<initrd>/a/initrd.img</initrd>", "")
    added = ET.fromstring(domxml.with_boot_files(no_initrd, initrd="/b/initrd"))
    assert [n.tag for n in added.find("os")] == ["type", "kernel", "initrd", "cmdline"]
    assert domxml.with_boot_files(synthetic.XML, kernel="/b/kernel") == synthetic.XML
    assert domxml.boot_files(synthetic.XML) == {"kernel": None, "initrd": None, "cmdline": None}


def test_package_round_trip(kernel_base, tmp_path):
    store = bases.BaseStore(os.path.dirname(os.path.dirname(kernel_base.path)))
    package = str(tmp_path / "base.zip")
    store.export(kernel_base.id, package)
    with zipfile.ZipFile(package) as zf:
        assert sorted(zf.namelist()) == ["disk.raw", "initrd", "kernel", "manifest.json",
                                         "memory.img"]
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["kernel_sha256"] == hashlib.sha256(KERNEL).hexdigest()
    assert manifest["initrd_size"] == len(INITRD) and manifest["cmdline"] == CMDLINE

    other = bases.BaseStore(str(tmp_path / "other"))
    imported = other.import_package(package)
    assert imported.id == kernel_base.id and imported.cmdline == CMDLINE
    for member in ("kernel", "initrd"):
        assert imported.manifest[member + "_sha256"] == kernel_base.manifest[member + "_sha256"]
        assert stat.S_IMODE(os.stat(imported.boot_paths[member]).st_mode) == 0o444
    assert os.listdir(other.tmp_dir) == []


def rewrite_package(src, dst, change=None, drop=(), add=None):
    """Copy base package ``src`` to ``dst``: ``change(manifest)``, members in ``drop``
    left out, ``add`` ({name: bytes}) added (a second member of a name, too)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zipfile warns about duplicate names
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json" and change:
                manifest = json.loads(data)
                change(manifest)
                data = json.dumps(manifest).encode()
            if name not in drop:
                zout.writestr(name, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


@pytest.fixture
def package(kernel_base, tmp_path):
    store = bases.BaseStore(os.path.dirname(os.path.dirname(kernel_base.path)))
    path = str(tmp_path / "base.zip")
    store.export(kernel_base.id, path)
    return path


def without_boot_keys(manifest):
    for key in ("kernel_size", "kernel_sha256", "initrd_size", "initrd_sha256", "cmdline"):
        del manifest[key]


@pytest.mark.parametrize("change, drop, add, cls, phrase", [
    (lambda m: m.update(kernel_sha256="cd" * 32), (), None, IntegrityError,
     "base package kernel_sha256 is " + "cd" * 32 + ", its content gives "),
    (lambda m: m.update(initrd_sha256="nope"), (), None, FormatError,
     "manifest initrd_sha256 is not a sha256 digest"),
    (lambda m: m.update(kernel_size=2 << 30), (), None, FormatError,
     "manifest kernel_size 2147483648 is not a size up to 1073741824"),
    (lambda m: m.update(kernel_size=len(KERNEL) - 1), (), None, FormatError,
     "kernel is %d bytes, the manifest says %d" % (len(KERNEL), len(KERNEL) - 1)),
    (lambda m: m.update(cmdline="a\nb"), (), None, FormatError,
     "manifest cmdline is not a kernel command line"),
    (None, ("kernel",), None, FormatError,
     "its manifest describes kernel and initrd, it holds initrd"),
    (without_boot_keys, (), None, FormatError,
     "its manifest describes no boot files, it holds kernel and initrd"),
    (None, (), {"dtb": b"x"}, FormatError, "(and optionally kernel, initrd), it holds"),
    (None, (), {"kernel": KERNEL}, FormatError, "(and optionally kernel, initrd), it holds"),
    (lambda m: [m.pop("kernel_size"), m.pop("kernel_sha256")], ("kernel",), None, FormatError,
     "has an initrd but no kernel"),
])
def test_bad_boot_members_are_refused_in_one_line(package, tmp_path, change, drop, add, cls,
                                                  phrase):
    bad = rewrite_package(package, str(tmp_path / "bad.zip"), change, drop, add)
    store = bases.BaseStore(str(tmp_path / "other"))
    with pytest.raises(cls) as err:
        store.import_package(bad)
    message = str(err.value)
    assert phrase in message and "\n" not in message, message
    assert store.list() == [] and os.listdir(store.tmp_dir) == []


def test_old_package_without_boot_files_still_imports(package, tmp_path):
    old = rewrite_package(package, str(tmp_path / "old.zip"), without_boot_keys,
                          ("kernel", "initrd"))
    base = bases.BaseStore(str(tmp_path / "other")).import_package(old)
    assert base.boot_paths == {} and base.cmdline is None
    assert base.boot_files() == {"kernel": None, "initrd": None}
