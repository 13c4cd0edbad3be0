"""A base's RAM file: its guest RAM block ``pc.ram`` as a flat file, for O(delta) restores.

Built once per base from its verified save image (the file is ``pc.ram`` in the base's
directory, sparse where the guest page is zeros; ``ram.json`` records its hash, the save
image hash it came from and its inode, size and change times; ``resume.stream`` is the
base's own QEMU stream without the pages the file holds). A restore maps it privately
(``MAP_PRIVATE``, ``domxml.with_ram_file``): guest writes stay in the VM, the file is
never written. Before every use an O(1) ``stat`` is compared with the record; a changed
file is not used but rebuilt.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import os
import pwd
from array import array

from cloudlet_compute.errors import CloudletError, IntegrityError
from cloudlet_compute.format import deltastream, migstream, saveimage
from cloudlet_compute.format.records import CHUNK_SIZE, ZERO_CHUNK
from cloudlet_compute.format.skeleton import Skeleton
from cloudlet_compute.host import domxml, ramhook

LOG = logging.getLogger(__name__)
RAM_BLOCK = "pc.ram"
WRITE_RUN = 8 << 20
STAT_FIELDS = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
FORCE_FULL = "CLOUDLET_RESTORE"      # =full: always restore the whole image
PART = ".part"


class Unusable(CloudletError):
    """This restore cannot map the base's RAM file; the message says why."""


def _qemu_ids():
    try:
        user = pwd.getpwnam(os.environ.get("CLOUDLET_QEMU_USER", "libvirt-qemu"))
    except KeyError:
        return None
    return user.pw_uid, user.pw_gid


def _paths(base):
    """``(RAM file, record, resume stream)`` paths of ``base``."""
    return tuple(os.path.join(base.path, name) for name in ("pc.ram", "ram.json", "resume.stream"))


def _stat(path):
    st = os.stat(path)
    return {field: getattr(st, field) for field in STAT_FIELDS}


class RamFile:
    """A built, recorded RAM file of one base."""

    def __init__(self, base):
        self.base = base
        self.path, self.record_path, self.stream_path = _paths(base)
        with open(self.record_path) as f:
            self.record = json.load(f)

    @property
    def size(self):
        return self.record["size"]

    def unchanged(self):
        """True if the file and the resume stream are as built (one ``stat`` each)."""
        try:
            return _stat(self.path) == self.record["stat"] and \
                _stat(self.stream_path) == self.record["stream_stat"] and \
                self.record["memory_sha256"] == self.base.memory_sha256
        except (OSError, KeyError):
            return False

    def resume_stream(self):
        """The base's own stream without the pages of the RAM file, checked."""
        with open(self.stream_path, "rb") as f:
            stream = f.read()
        if hashlib.sha256(stream).hexdigest() != self.record["stream_sha256"]:
            raise IntegrityError("resume stream %s does not match its recorded hash"
                                 % self.stream_path)
        return stream


def build(base, verified=False):
    """Build (or rebuild) ``base``'s RAM file, resume stream and record from its save image,
    after checking the image against the base's recorded hash (unless the caller just
    ``verified`` it); return the ``RamFile``."""
    ram_path, record_path, stream_path = _paths(base)
    with open(base.memory_path, "rb") as image, \
            mmap.mmap(image.fileno(), 0, prot=mmap.PROT_READ) as buf:
        if not verified and hashlib.sha256(buf).hexdigest() != base.memory_sha256:
            raise IntegrityError("base memory image %s does not match its recorded hash"
                                 % base.memory_path)
        header = saveimage.SaveHeader.parse(buf)
        layout = migstream.parse(buf, header.stream_offset)
        names = layout.block_names()
        if RAM_BLOCK not in names:
            raise Unusable("the base's memory image has no %s block" % RAM_BLOCK)
        if len(set(layout.page_keys)) != len(layout.page_keys):
            raise Unusable("the base's memory image sends some pages twice")
        ram = names.index(RAM_BLOCK)
        length = layout.blocks[ram][1]
        file_sha = _write_ram(buf, layout, ram, length, ram_path + PART)
        stream_sha = _write_resume_stream(buf, header, layout, stream_path + PART)
    # QEMU 7.2 opens the file read-write (it never writes it: the mapping is private).
    os.chmod(ram_path + PART, 0o600)
    ids = _qemu_ids()
    if ids:
        os.chown(ram_path + PART, *ids)
    for path in (ram_path, stream_path):
        os.replace(path + PART, path)
    record = {"block": RAM_BLOCK, "size": length, "sha256": file_sha,
              "memory_sha256": base.memory_sha256, "stat": _stat(ram_path),
              "stream_sha256": stream_sha, "stream_stat": _stat(stream_path)}
    with open(record_path + PART, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(record_path + PART, record_path)
    LOG.info("built the RAM file of base %s (%d MiB)", base.id, length >> 20)
    return RamFile(base)


def _write_ram(buf, layout, ram, length, path):
    """Write block ``ram`` (the last record of each page wins) sparse at ``path``; return
    the SHA-256 of its content."""
    low, sha = (1 << 48) - 1, hashlib.sha256()
    payload = {key & low: pos for key, pos in layout.latest.items() if key >> 48 == ram}
    run, run_at = bytearray(), 0
    with open(path, "wb") as out:
        out.truncate(length)
        for offset in range(0, length, CHUNK_SIZE):
            pos = payload.get(offset, -1)
            page = buf[pos:pos + CHUNK_SIZE] if pos >= 0 else ZERO_CHUNK
            sha.update(page)
            if page == ZERO_CHUNK or len(run) >= WRITE_RUN:
                if run:
                    os.pwrite(out.fileno(), run, run_at)
                run = bytearray()
            if page != ZERO_CHUNK:
                if not run:
                    run_at = offset
                run += page
        if run:
            os.pwrite(out.fileno(), run, run_at)
        os.fsync(out.fileno())
    return sha.hexdigest()


def _write_resume_stream(buf, header, layout, path):
    """Write the base's stream without the RAM file's pages; return its SHA-256."""
    offsets = layout.payload_offsets
    start = header.stream_offset
    pieces, prev = [], start
    for pos in offsets:
        pieces.append(buf[prev:pos])
        prev = pos + CHUNK_SIZE
    pieces.append(buf[prev:])
    positions = array("Q", (pos - start - CHUNK_SIZE * i for i, pos in enumerate(offsets)))
    skel = Skeleton(positions, array("q"), b"".join(pieces))
    def page_of(slot):
        return buf[offsets[slot]:offsets[slot] + CHUNK_SIZE]
    sha = hashlib.sha256()
    with open(path, "wb") as out:
        for piece in deltastream.delta_stream(skel, 0, RAM_BLOCK, (), page_of):
            sha.update(piece)
            out.write(piece)
    return sha.hexdigest()


def _lock(base):
    fd = os.open(os.path.join(base.path, "ram.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def ensure(base):
    """``base``'s RAM file, built now if it is missing or changed since it was built."""
    fd = _lock(base)
    try:
        with contextlib.suppress(FileNotFoundError, ValueError):
            ram = RamFile(base)
            if ram.unchanged():
                return ram
            LOG.warning("the RAM file of base %s changed since it was built: not used, "
                        "rebuilt", base.id)
        return build(base)
    finally:
        os.close(fd)


def usable(base, xml, name, ram_size):
    """``(RamFile, None)`` if a restore of domain ``name`` (XML ``xml``, RAM block of
    ``ram_size`` bytes) can map ``base``'s RAM file, else ``(None, why not)``."""
    why = None
    if os.environ.get(FORCE_FULL) == "full":
        why = "%s=full is set" % FORCE_FULL
    elif not ramhook.installed():
        why = "the libvirt hook %s is not installed (scripts/setup-host.sh installs it)" \
            % ramhook.HOOK_PATH
    elif not name.isascii():
        why = "the domain name is not ASCII"
    else:
        why = domxml.ram_file_refusal(xml)
    if why:
        return None, why
    try:
        ram = ensure(base)
    except Unusable as exc:
        return None, str(exc)
    except OSError as exc:
        return None, "the base's RAM file cannot be built: %s" % exc.strerror
    if ram_size is not None and ram.size != ram_size:
        return None, "the RAM block is %d bytes, the base's RAM file %d" % (ram_size, ram.size)
    return ram, None
