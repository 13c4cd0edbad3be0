"""Source domains for ``tests/compute/test_sources*.py``: the tiny guest on a raw disk or on a
qcow2 over a chain, and domains a capture must refuse, one per kind, as edits of its domain
XML. ``REFUSALS[kind]`` is ``(edit, phrase)``: ``edit(root, workdir)`` changes the parsed XML,
and the one-line refusal names it with ``phrase``."""

import os
import subprocess
import uuid
import xml.etree.ElementTree as ET

from stack import story as storymod
from stack.guest import guest

LIBVIRT_LOG = "/var/log/libvirt/qemu/%s.log"


def _sub(parent, xml):
    parent.append(ET.fromstring(xml))


def _disk(root):
    return root.find("devices/disk")


def _second_disk(root, workdir):
    path = os.path.join(workdir, "second.raw")
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    _sub(root.find("devices"), "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
         "<source file='%s'/><target dev='vdb' bus='virtio'/></disk>" % path)


def _retype_disk(kind, source):
    def edit(root, _workdir):
        disk = _disk(root)
        disk.set("type", kind)
        disk.remove(disk.find("source"))
        disk.insert(1, ET.fromstring(source))
    return edit


def _disk_child(xml):
    return lambda root, _workdir: _sub(_disk(root), xml)


def _device(xml):
    return lambda root, _workdir: _sub(root.find("devices"), xml)


def _disk_format(fmt):
    return lambda root, _workdir: _disk(root).find("driver").set("type", fmt)


def _hugepages(root, _workdir):
    root.insert(3, ET.fromstring("<memoryBacking><hugepages/></memoryBacking>"))


def _dimm(root, _workdir):
    root.insert(3, ET.fromstring("<maxMemory slots='2' unit='MiB'>1024</maxMemory>"))
    _sub(root.find("cpu"), "<numa><cell id='0' cpus='0' memory='%d' unit='MiB'/></numa>"
         % guest.tiny().memory_mib)
    _sub(root.find("devices"), "<memory model='dimm'><target><size unit='MiB'>128</size>"
         "<node>0</node></target></memory>")


def _domain_type(kind):
    return lambda root, _workdir: root.set("type", kind)


REFUSALS = {
    "two-disks": (_second_disk, "it has 2 disks, not one"),
    "network-disk": (_retype_disk("network", "<source protocol='nbd' name='x'>"
                                  "<host name='127.0.0.1' port='10809'/></source>"),
                     "disk vda is a network disk (type='network')"),
    "block-disk": (_retype_disk("block", "<source dev='/dev/cloudlet-no-such-device'/>"),
                   "disk vda is a host block device (type='block')"),
    "hostdev": (_device("<hostdev mode='subsystem' type='pci' managed='yes'><source>"
                        "<address domain='0x0000' bus='0x00' slot='0x1f' function='0x7'/>"
                        "</source></hostdev>"), "a host device (<hostdev>)"),
    "hugepages": (_hugepages, "hugepages"),
    "dimm": (_dimm, "a memory device (<memory model='dimm'>) beside its RAM"),
    "vmdk": (_disk_format("vmdk"), "disk vda is vmdk, not raw or qcow2"),
    "shareable": (_disk_child("<shareable/>"), "disk vda is shared with other domains"),
    "readonly": (_disk_child("<readonly/>"), "disk vda is read-only"),
    "transient": (_disk_child("<transient/>"), "disk vda is transient"),
    "block-backing": (_disk_child("<backingStore type='block'><format type='raw'/>"
                                  "<source dev='/dev/cloudlet-no-such-device'/></backingStore>"),
                      "a host block device in its backing chain"),
    "filesystem": (_device("<filesystem type='mount' accessmode='passthrough'>"
                           "<source dir='/srv'/><target dir='share'/></filesystem>"),
                   "a host directory share (<filesystem>)"),
    "shmem": (_device("<shmem name='cloudlet'><model type='ivshmem-plain'/>"
                      "<size unit='M'>4</size></shmem>"), "a shared memory device"),
    "tpm": (_device("<tpm model='tpm-tis'><backend type='emulator' version='2.0'/></tpm>"),
            "a TPM"),
    "xen": (_domain_type("xen"), "it is a xen domain, not KVM or QEMU"),
}
# What a real libvirt can define (shut off) for the CLI tests; the rest are XML-only.
DEFINABLE = ("two-disks", "network-disk", "block-disk", "hostdev", "hugepages", "dimm")


def domain_xml(name, workdir, disk_path, disk_format="qcow2", kind=None):
    """The tiny guest's domain XML, with refusal ``kind`` applied if given."""
    root = ET.fromstring(guest.domain_xml(name, workdir, disk_path, disk_format))
    if kind:
        REFUSALS[kind][0](root, workdir)
    return ET.tostring(root, encoding="unicode")


def boot_chain_source(story):
    """Boot the story's source, 2 vCPUs on 2 NUMA cells, on ``top.qcow2`` over ``mid.qcow2``
    (named relative to top's directory) over the image's raw disk, with a file written while
    ``mid`` was the top (so only the whole chain holds it); return ``(domain name, the file's
    content)``."""
    workdir = storymod.make_dir(os.path.join(story.root, "src"))
    mid, top = os.path.join(workdir, "mid.qcow2"), os.path.join(workdir, "top.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    os.path.join(story.image.directory, "disk.raw"), mid], check=True)
    marker = _write_marker(story, mid)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "mid.qcow2",
                    top], check=True, cwd=workdir)
    name = story.name("src")
    root = ET.fromstring(guest.domain_xml(name, workdir, top, "qcow2"))
    root.find("vcpu").text = "2"
    cell = "<cell id='%d' cpus='%d' memory='%d' unit='MiB'/>"
    _sub(root.find("cpu"), "<numa>%s</numa>" % "".join(
        cell % (n, n, guest.tiny().memory_mib // 2) for n in (0, 1)))
    boot_xml(story, name, ET.tostring(root, encoding="unicode"), workdir)
    return name, marker


def boot_xml(story, name, xml, workdir):
    """Start transient domain ``xml`` (named ``name``, command socket in ``workdir``) for
    ``story`` and wait until its shell answers."""
    story.domains.append(name)
    story.conn.createXML(xml, 0)
    with guest.GuestChannel(unix_path=os.path.join(workdir, guest.CMD_SOCK)) as chan:
        chan.wait_ready(60)


def _write_marker(story, disk):
    """Boot a throwaway domain on qcow2 ``disk``, write /mnt/marker, stop it; return what it
    wrote."""
    name, marker = story.name("prep"), uuid.uuid4().hex
    workdir = storymod.make_dir(os.path.join(story.root, "prep"))
    story.domains.append(name)
    with guest.boot(story.conn, name, workdir, disk, "qcow2")[1] as chan:
        chan.run("echo %s > /mnt/marker; sync" % marker)
    guest.destroy(story.conn, name)
    return marker
