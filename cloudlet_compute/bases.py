"""The base VM store under ``$CLOUDLET_HOME``: create, list, export, import, delete.

Layout of one base VM, ``bases/<id>/`` (``id`` = SHA-256 of the disk content)::

    base.json       manifest: name, sizes, hashes, RAM blocks, creation time
    disk.raw        the disk, raw and sparse
    memory.img      the memory image (libvirt save image, format "raw")
    disk.digests    SHA-256 of every 4 KiB disk chunk, in disk order (32 bytes each)
    memory.pages    msgpack: RAM blocks, and for every page payload in memory.img its
                    guest address, file offset and SHA-256
    kernel, initrd  (a direct-kernel-boot domain's base only) read-only copies of what it
                    boots; ``bootfiles`` describes them
    pc.ram, ram.json, resume.stream
                    the RAM file restores map, its record, the stream that resumes
                    the base over it (``host/ramfile.py``; built at registration, or
                    at first use for a base registered before)

A base is built in ``tmp/`` and renamed into place, so a base directory is complete or
absent. A base package (export/import) is a zip of ``manifest.json``, ``disk.raw`` and
``memory.img`` (and ``kernel``, ``initrd`` if the base has them); import recomputes and
checks every hash before registering.
"""

import datetime
import hashlib
import json
import logging
import mmap
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from array import array

import msgpack

from cloudlet_compute import bootfiles, imagemodel, pagefile
from cloudlet_compute.errors import (CloudletError, ConflictError, FormatError,
                                     IntegrityError, NotFoundError)
from cloudlet_compute.format import migstream, saveimage
from cloudlet_compute.format.records import CHUNK_SIZE, ZERO_DIGEST, check_disk_offset
from cloudlet_compute.host import domxml, qemuimg, ramfile
from cloudlet_compute.progress import NullProgress

LOG = logging.getLogger(__name__)
READ_PIECE = 1 << 20
BASE_FORMAT = "openstackpp-base"
PACKAGE_FORMAT = "openstackpp-base-package"
PACKAGE_MEMBERS = ("manifest.json", "disk.raw", "memory.img")
MAX_DISK_SIZE = 1 << 40
MAX_MEMORY_SIZE = 256 << 30
ID_PATTERN = re.compile(r"[0-9a-f]{64}\Z")


def default_home():
    """Return ``$CLOUDLET_HOME`` or ``~/.cloudlet``."""
    return os.environ.get("CLOUDLET_HOME") or os.path.expanduser("~/.cloudlet")


def digest_disk(path, progress=None):
    """Return ``(sha256 hex of the content, concatenated 4 KiB chunk digests)``."""
    whole, digests = hashlib.sha256(), bytearray()
    zero_piece = bytes(READ_PIECE)
    zero_run = ZERO_DIGEST * (READ_PIECE // CHUNK_SIZE)
    sha = hashlib.sha256
    with open(path, "rb") as disk:
        while True:
            piece = disk.read(READ_PIECE)
            if not piece:
                break
            whole.update(piece)
            if piece == zero_piece:
                digests += zero_run
            else:
                if len(piece) % CHUNK_SIZE:
                    raise FormatError("disk %s is not a whole number of 4 KiB chunks" % path)
                for pos in range(0, len(piece), CHUNK_SIZE):
                    digests += sha(piece[pos:pos + CHUNK_SIZE]).digest()
            if progress:
                progress.update(len(piece))
    return whole.hexdigest(), bytes(digests)


def index_memory(path):
    """Parse a memory image; return ``(sha256 hex, SaveHeader, RamLayout, page digests)``."""
    if os.path.getsize(path) < saveimage.HEADER.size:
        raise FormatError("memory image %s is %d bytes: too short for a libvirt save image"
                          % (path, os.path.getsize(path)))
    with open(path, "rb") as image, mmap.mmap(image.fileno(), 0, prot=mmap.PROT_READ) as buf:
        header = saveimage.SaveHeader.parse(buf)
        layout = migstream.parse(buf, header.stream_offset)
        sha = hashlib.sha256
        digests = b"".join(sha(buf[o:o + CHUNK_SIZE]).digest() for o in layout.payload_offsets)
        return hashlib.sha256(buf).hexdigest(), header, layout, digests


class BaseDiskChunks:
    """Chunks of a base disk read by byte offset, as records refer to them: each reference
    is checked (512-byte aligned, inside the disk) before it is read."""

    def __init__(self, base):
        self.size = base.disk_size
        self._file = open(base.disk_path, "rb")

    def read(self, offset, where):
        """The ``CHUNK_SIZE`` bytes at ``offset``; ``where`` names the record for errors."""
        check_disk_offset(offset, self.size, where, "base disk")
        return os.pread(self._file.fileno(), CHUNK_SIZE, offset)

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class BaseVM:
    """One registered base VM (read-only view of its directory)."""

    def __init__(self, path):
        self.path = path
        try:
            with open(os.path.join(path, "base.json")) as f:
                self.manifest = json.load(f)
        except (OSError, ValueError) as exc:
            raise FormatError("base VM at %s is damaged: %s" % (path, exc)) from None
        self.id = self.manifest["id"]
        self.name = self.manifest["name"]
        self.disk_size = self.manifest["disk_size"]
        self.memory_size = self.manifest["memory_size"]
        self.memory_sha256 = self.manifest["memory_sha256"]
        self.ram_size = self.manifest["ram_size"]
        self.domain_xml = self.manifest["domain_xml"]
        self.disk_path = os.path.join(path, "disk.raw")
        self.memory_path = os.path.join(path, "memory.img")
        self.disk_digests_path = os.path.join(path, "disk.digests")
        self.boot_paths = bootfiles.paths_of(path, self.manifest)
        self.cmdline = self.manifest.get("cmdline")

    def disk_digests(self):
        """Return the concatenated SHA-256 digests of the disk's 4 KiB chunks."""
        with open(self.disk_digests_path, "rb") as f:
            return f.read()

    def memory_pages(self, digests=True):
        """Return ``(blocks, keys, offsets, digests)`` of the memory image's page payloads
        (digests None unless asked for)."""
        pages = pagefile.read(os.path.join(self.path, "memory.pages"),
                              skip=() if digests else ("digests",))
        keys, offsets = array("Q"), array("Q")
        keys.frombytes(pages.pop("keys"))
        offsets.frombytes(pages.pop("offsets"))
        return pages["blocks"], keys, offsets, pages["digests"]

    def overlay_size_bound(self):
        """The most bytes an overlay of this base can take: every disk chunk and memory page
        changed and incompressible, plus record and package overhead."""
        data = self.disk_size + self.memory_size
        return data + data // 16 + (16 << 20)

    def image_files(self):
        """``{cloudlet_type: path}`` of the files that make this base's Glance images."""
        files = {image_type: os.path.join(self.path, name)
                 for image_type, name in imagemodel.BASE_FILES.items()}
        files.update({image_type: self.boot_paths[member]
                      for image_type, member in imagemodel.BOOT_FILES.items()
                      if member in self.boot_paths})
        return files

    def boot_files(self):
        """``{"kernel": path, "initrd": path}`` (None where it has none) for
        ``domxml.with_boot_files``: where domains of this base find what they boot."""
        return {member: self.boot_paths.get(member) for member in bootfiles.MEMBERS}

    def footprint(self):
        """Bytes the base takes on disk (allocated blocks: its disk and RAM file are sparse)."""
        return sum(entry.stat().st_blocks * 512 for entry in os.scandir(self.path)
                   if entry.is_file(follow_symlinks=False))

    def summary(self):
        """A dict for listings."""
        return {"id": self.id, "name": self.name, "disk_size": self.disk_size,
                "memory_size": self.memory_size, "created": self.manifest["created"]}


class BaseStore:
    """The base VMs under one ``$CLOUDLET_HOME``."""

    def __init__(self, home=None):
        self.home = os.path.abspath(home or default_home())
        self.bases_dir = os.path.join(self.home, "bases")
        self.tmp_dir = os.path.join(self.home, "tmp")
        for d in (self.home, self.bases_dir, self.tmp_dir):
            os.makedirs(d, mode=0o755, exist_ok=True)

    def scratch(self, prefix):
        """Return a new scratch directory on the store's file system (caller removes it)."""
        path = tempfile.mkdtemp(prefix=prefix, dir=self.tmp_dir)
        os.chmod(path, 0o755)
        return path

    def list(self):
        """Return every registered base VM, oldest first."""
        bases = [BaseVM(os.path.join(self.bases_dir, d)) for d in os.listdir(self.bases_dir)
                 if ID_PATTERN.match(d)]
        return sorted(bases, key=lambda b: b.manifest["created"])

    def get(self, ref):
        """Return the base whose id, unique id prefix (8+ hex digits) or name is ``ref``."""
        if ID_PATTERN.match(ref) and os.path.isdir(os.path.join(self.bases_dir, ref)):
            return BaseVM(os.path.join(self.bases_dir, ref))
        matches = [b for b in self.list()
                   if (len(ref) >= 8 and b.id.startswith(ref)) or b.name == ref]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ConflictError("%r names %d base VMs; use the full id" % (ref, len(matches)))
        raise NotFoundError("no base VM %r in %s" % (ref, self.bases_dir))

    def add(self, disk_path, memory_path, name, expected=None, progress=None, boot=None):
        """Register ``disk_path`` (raw) and ``memory_path`` as a base VM named ``name``,
        with ``boot`` (``bootfiles.BootFiles``) if its domain boots a kernel.

        The files are moved into the store. ``expected``, a package manifest, must agree
        with every hash and size computed here.
        """
        disk_sha, disk_digests = digest_disk(disk_path, progress)
        memory_sha, header, layout, page_digests = index_memory(memory_path)
        manifest = {
            "format": BASE_FORMAT, "version": 1, "id": disk_sha, "name": name,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "disk_size": os.path.getsize(disk_path), "memory_size": os.path.getsize(memory_path),
            "memory_sha256": memory_sha, "ram_size": layout.ram_size,
            "chunk_size": CHUNK_SIZE, "domain_xml": header.xml,
        }
        manifest.update(bootfiles.describe(boot))
        if expected is not None:
            for key in ["id", "disk_size", "memory_size", "memory_sha256"] + \
                    bootfiles.hashed_keys(expected):
                if expected[key] != manifest.get(key):
                    raise IntegrityError("base package %s is %s, its content gives %s"
                                         % (key, expected[key], manifest.get(key)))
        final = os.path.join(self.bases_dir, disk_sha)
        if os.path.exists(final):
            raise ConflictError("base VM %s is already registered (%s)"
                                % (disk_sha, BaseVM(final).name))
        build = self.scratch("base-")
        try:
            with open(os.path.join(build, "disk.digests"), "wb") as f:
                f.write(disk_digests)
            with open(os.path.join(build, "memory.pages"), "wb") as f:
                f.write(msgpack.packb({
                    "blocks": layout.block_names(),
                    "keys": array("Q", layout.page_keys).tobytes(),
                    "offsets": array("Q", layout.payload_offsets).tobytes(),
                    "digests": page_digests}))
            with open(os.path.join(build, "base.json"), "w") as f:
                json.dump(manifest, f, indent=1)
            os.rename(disk_path, os.path.join(build, "disk.raw"))
            os.rename(memory_path, os.path.join(build, "memory.img"))
            for member in ("disk.raw", "memory.img"):
                os.chmod(os.path.join(build, member), 0o644)
            bootfiles.install(boot, build)
            os.rename(build, final)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        LOG.info("registered base VM %s (%s)", disk_sha, name)
        base = BaseVM(final)
        try:
            ramfile.build(base, verified=True)
        except ramfile.Unusable as exc:
            LOG.info("base VM %s has no RAM file, its restores use the whole image: %s",
                     disk_sha, exc)
        return base

    def delete(self, ref, conn=None):
        """Remove a base VM; refuse while a domain made from it exists."""
        base = self.get(ref)
        if conn is not None:
            for dom in conn.listAllDomains():
                if domxml.base_id_of(dom.XMLDesc()) == base.id:
                    raise ConflictError("base VM %s is used by domain %s" % (base.id, dom.name()))
        trash = self.scratch("delete-")
        os.rename(base.path, os.path.join(trash, base.id))
        shutil.rmtree(trash)
        return base

    def create_from_domain(self, conn, domain_name, name, progress=None):
        """Snapshot the running domain ``domain_name`` into a new base VM named ``name``.

        The domain keeps running: it stops only while its last memory pages are taken
        and its disk file is copied (``capture``); the copy is then converted to raw.
        """
        from cloudlet_compute.write import capture  # capture needs libvirt; the store does not
        capture.source(conn, domain_name)       # refuses what it cannot take, touching nothing
        work = self.scratch("create-")
        raw_path = os.path.join(work, "disk.raw")
        try:
            cap = capture.capture(conn, domain_name, work)
            boot = bootfiles.copy_from_domain(cap.xml, work)
            qemuimg.convert_to_raw(cap.disk_path, raw_path)
            os.unlink(cap.disk_path)
            return self.add(raw_path, cap.memory_path, name, progress=progress, boot=boot)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def export(self, ref, path, progress=None):
        """Write base VM ``ref`` as a base package zip at ``path``."""
        base = self.get(ref)
        manifest = {"format": PACKAGE_FORMAT, "version": 1, "id": base.id, "name": base.name,
                    "disk_size": base.disk_size, "memory_size": base.memory_size,
                    "memory_sha256": base.memory_sha256}
        manifest.update({key: base.manifest[key] for key in
                         bootfiles.hashed_keys(base.manifest) + ["cmdline"]
                         if key in base.manifest})
        members = [("disk.raw", base.disk_path), ("memory.img", base.memory_path)]
        members += sorted(base.boot_paths.items())
        part = path + ".part"
        try:
            with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED, compresslevel=1,
                                 allowZip64=True) as zf:
                zf.writestr("manifest.json", json.dumps(manifest, indent=1))
                for member, src in members:
                    with open(src, "rb") as fin, zf.open(member, "w", force_zip64=True) as fout:
                        for piece in iter(lambda: fin.read(READ_PIECE), b""):
                            fout.write(piece)
                            if progress:
                                progress.update(len(piece))
            os.replace(part, path)
        except BaseException:
            if os.path.exists(part):
                os.unlink(part)
            raise
        return base

    def import_package(self, path, name=None, progress=None):
        """Register the base VM in package ``path`` after checking every hash."""
        progress = progress or NullProgress()
        try:
            zf = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise NotFoundError("base package %s does not exist" % path) from None
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, NotImplementedError) as exc:
            raise FormatError("%s is not a base package zip: %s" % (path, exc)) from None
        work = None
        try:
            with zf:
                manifest = _check_package(zf, path)
                boot_members = bootfiles.package_members(zf, manifest, path)
                if os.path.exists(os.path.join(self.bases_dir, manifest["id"])):
                    raise ConflictError("base VM %s is already registered" % manifest["id"])
                work = self.scratch("import-")
                for member in ("disk.raw", "memory.img") + tuple(boot_members):
                    _extract_sparse(zf, member, os.path.join(work, member),
                                    manifest[member.split(".")[0] + "_size"], progress)
            boot = bootfiles.BootFiles({m: os.path.join(work, m) for m in boot_members},
                                       manifest.get("cmdline")) if boot_members else None
            return self.add(os.path.join(work, "disk.raw"), os.path.join(work, "memory.img"),
                            name or manifest["name"], expected=manifest, boot=boot)
        except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError,
                NotImplementedError) as exc:   # what zipfile raises on a damaged zip
            raise IntegrityError("base package %s is corrupt: %s" % (path, exc)) from None
        except CloudletError as exc:
            if isinstance(exc, FormatError) and not str(exc).startswith("base package"):
                raise IntegrityError("base package %s: %s" % (path, exc)) from None
            raise
        finally:
            if work:
                shutil.rmtree(work, ignore_errors=True)


def _check_package(zf, path):
    names = zf.namelist()
    optional = [n for n in names if n in bootfiles.MEMBERS]
    if sorted(names) != sorted(PACKAGE_MEMBERS + tuple(set(optional))):
        raise FormatError("base package %s must hold exactly %s (and optionally %s), it holds %s"
                          % (path, ", ".join(PACKAGE_MEMBERS), ", ".join(bootfiles.MEMBERS),
                             ", ".join(map(repr, names))))
    size = os.path.getsize(path)
    for info in zf.infolist():   # what zipfile would trip over with an error of its own
        if not 0 <= info.header_offset < size or info.compress_size > size:
            raise FormatError("base package %s: member %s (%d bytes at offset %d) does not fit "
                              "in the %d-byte file" % (path, info.filename, info.compress_size,
                                                       info.header_offset, size))
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or \
                info.flag_bits & 0x1:
            raise FormatError("base package %s: member %s is encrypted or compressed with "
                              "method %d; only stored and deflated members are read"
                              % (path, info.filename, info.compress_type))
    if zf.getinfo("manifest.json").file_size > 1 << 20:
        raise FormatError("base package %s: manifest.json is too large" % path)
    try:
        manifest = json.loads(zf.read("manifest.json"))
    except (ValueError, RecursionError) as exc:   # RecursionError: nested too deep
        raise FormatError("base package %s: manifest.json is not JSON: %s" % (path, exc)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise FormatError("base package %s: manifest.json is not a base package manifest" % path)
    if manifest.get("version") != 1:
        raise FormatError("base package version %r is not supported" % manifest.get("version"))
    if not isinstance(manifest.get("id"), str) or not ID_PATTERN.match(manifest["id"]):
        raise FormatError("base package %s: manifest id is not a sha256 digest" % path)
    if not isinstance(manifest.get("name"), str) or not manifest["name"]:
        raise FormatError("base package %s: manifest has no name" % path)
    for key, limit in (("disk_size", MAX_DISK_SIZE), ("memory_size", MAX_MEMORY_SIZE)):
        value = manifest.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
            raise FormatError("base package %s: manifest %s %r is not a size up to %d"
                              % (path, key, value, limit))
        member = "disk.raw" if key == "disk_size" else "memory.img"
        if zf.getinfo(member).file_size != value:
            raise FormatError("base package %s: %s is %d bytes, the manifest says %d"
                              % (path, member, zf.getinfo(member).file_size, value))
    return manifest


def _extract_sparse(zf, member, dest, size, progress):
    """Copy a zip member to ``dest`` without writing runs of zeros; check its size."""
    zero_piece = bytes(READ_PIECE)
    written = 0
    with zf.open(member) as src, open(dest, "wb") as out:
        while True:
            piece = src.read(READ_PIECE)
            if not piece:
                break
            written += len(piece)
            if written > size:
                raise IntegrityError("%s expands beyond its declared %d bytes" % (member, size))
            if piece == zero_piece[:len(piece)]:
                out.seek(len(piece), os.SEEK_CUR)
            else:
                out.write(piece)
            progress.update(len(piece))
        out.truncate(written)
    if written != size:
        raise IntegrityError("%s holds %d bytes, its manifest says %d" % (member, written, size))
