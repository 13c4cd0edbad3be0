"""A tiny real test guest: libvirt XML, a command channel, boot/destroy (tests, demo, bench).

The guest (built by ``stack/guest/build.sh`` into :data:`GUEST_DIR`) is a Debian cloud kernel
plus a busybox initramfs whose ``/init`` is ``stack/guest/init.sh``. It mounts its virtio disk
``/dev/vda`` on ``/mnt``, prints ``tick N`` each second on ttyS0 (and writes N to ``/run/tick``),
runs ``udhcpc`` on every NIC that appears, and runs one long-lived shell on ttyS1.

Command framing on ttyS1 (raw tty, no echo); ``<id>`` is unique per command::

    host  -> guest: b"\\n__C__ <id> <base64(command)>\\n"
    guest -> host : b"__B__<id>\\n" + output (stdout+stderr) + b"\\n__E__<id> <rc>\\n"

The command is ``eval``-ed in the guest shell itself, so shell variables persist between
commands and across a libvirt save/restore. Anything on the port that is not our
``__B__<id>``..``__E__<id>`` frame (output of earlier connections, late answers to timed-out
commands, stray background output before the frame) is ignored.

Permissions: libvirt runs QEMU as ``libvirt-qemu``. Every directory on the path to ``workdir``
and to :data:`GUEST_DIR` must be searchable (``o+x``) by that user, and the disk image must be
in a place libvirt may chown (its DAC driver does that). The caller creates ``workdir``
(e.g. ``mkdir -p``; ``chmod 0755``); libvirt itself creates ``cmd.sock`` and ``console.log``
in it and hands them to QEMU.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

REPO_DIR = Path(__file__).resolve().parents[2]
GUEST_DIR = Path(os.environ.get("CLOUDLET_GUEST_DIR") or REPO_DIR / ".state" / "guest")
BUILD_SH = Path(__file__).resolve().parent / "build.sh"
KERNEL_CMDLINE = "console=ttyS0 panic=-1"

CONSOLE_LOG = "console.log"   # ttyS0 (kernel console + "tick N"), file under workdir
CMD_SOCK = "cmd.sock"         # ttyS1 (command shell), unix socket under workdir


class GuestError(Exception):
    """Base class of the errors raised by this module."""


class GuestTimeoutError(GuestError, TimeoutError):
    """The guest did not answer in time."""


class GuestConnectionError(GuestError, ConnectionError):
    """The channel to the guest's serial port is not (or no longer) connected."""


class GuestCommandError(GuestError):
    """A command exited with a non-zero code. ``rc``, ``output`` and ``cmd`` are attributes."""

    def __init__(self, cmd: str, rc: int, output: str):
        self.cmd, self.rc, self.output = cmd, rc, output
        tail = output if len(output) < 2000 else "..." + output[-2000:]
        super().__init__(f"guest command {cmd!r} exited with {rc}: {tail}")


@dataclass(frozen=True)
class Image:
    """A built test guest: the directory with its ``vmlinuz``, ``initrd.img`` and ``disk.raw``,
    and how to boot it (kernel command line, default RAM, how long a boot may take)."""

    directory: Path
    cmdline: str = KERNEL_CMDLINE
    memory_mib: int = 256
    boot_timeout: float = 60


def tiny() -> Image:
    """The tiny guest in :data:`GUEST_DIR` (built or not: see :func:`ensure_built`)."""
    return Image(GUEST_DIR)


def tiny_with_blocks(directory: os.PathLike | str, block_size: int) -> Image:
    """The tiny guest with its disk made again as an ext4 of ``block_size``-byte blocks (the
    same 64 MiB and content, the kernel and initrd linked) in the new ``directory``
    (searchable by the QEMU user). With 1 KiB blocks, what mke2fs picks for a small file
    system, a file's page-cache pages are disk windows at 1 KiB offsets, not disk chunks."""
    directory = Path(directory)
    content = directory / "content"
    content.mkdir(parents=True)
    directory.chmod(0o755)
    for name in ("vmlinuz", "initrd.img"):
        (directory / name).symlink_to(GUEST_DIR / name)
    (content / "hello.txt").write_text("hello from the cloudlet test disk\n")
    disk = directory / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", str(block_size), "-L", "cltest", "-d",
                    str(content), str(disk)], check=True)
    disk.chmod(0o644)
    return Image(directory)


def ensure_built(guest_dir: os.PathLike | str = None) -> Path:
    """Run build.sh (a no-op when the guest is up to date) and return the guest directory."""
    guest_dir = Path(guest_dir or GUEST_DIR)
    subprocess.run([str(BUILD_SH), str(guest_dir)], check=True)
    return guest_dir


def domain_xml(name: str, workdir: os.PathLike | str, disk_path: os.PathLike | str,
               disk_format: str = "raw", memory_mib: int | None = None, uuid: str | None = None,
               image: Image | None = None) -> str:
    """libvirt XML of a transient-friendly TCG domain booting a test guest.

    Kernel, initrd and command line come from ``image`` (default: the tiny guest in
    :data:`GUEST_DIR`), RAM too unless ``memory_mib`` is given; every per-VM host path (console
    log, command socket) lives directly under ``workdir``; the disk is ``disk_path`` (typically
    under workdir too). No network interface: hot-plug one to get DHCP in the guest.
    """
    image = image or tiny()
    memory_mib = memory_mib or image.memory_mib
    if disk_format not in ("raw", "qcow2"):
        raise ValueError(f"disk_format must be 'raw' or 'qcow2', not {disk_format!r}")
    workdir = Path(workdir).absolute()
    disk_path = Path(disk_path).absolute()
    uuid_elem = f"\n  <uuid>{escape(str(uuid))}</uuid>" if uuid else ""

    def a(value) -> str:
        return quoteattr(str(value))

    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>{uuid_elem}
  <memory unit='MiB'>{int(memory_mib)}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(Path(image.directory) / 'vmlinuz'))}</kernel>
    <initrd>{escape(str(Path(image.directory) / 'initrd.img'))}</initrd>
    <cmdline>{escape(image.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type={a(disk_format)}/>
      <source file={a(disk_path)}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path={a(workdir / CONSOLE_LOG)} append='on'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path={a(workdir / CMD_SOCK)}/>
      <target port='1'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class GuestChannel:
    """Command channel to the guest shell on ttyS1 (a libvirt unix socket, or TCP).

    ``GuestChannel(unix_path=...)`` or ``GuestChannel(tcp=(host, port))`` (e.g. a nova serial
    console in raw TCP mode). Connects lazily; :meth:`wait_ready` (re)connects as needed, so
    after a libvirt restore (new QEMU, new socket) just call ``wait_ready()`` again.
    """

    _READ_SIZE = 65536

    def __init__(self, unix_path: os.PathLike | str | None = None,
                 tcp: tuple[str, int] | None = None):
        if (unix_path is None) == (tcp is None):
            raise ValueError("give exactly one of unix_path or tcp")
        self.unix_path = str(unix_path) if unix_path is not None else None
        self.tcp = tuple(tcp) if tcp is not None else None
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    # -- connection ---------------------------------------------------------------------------
    def connect(self, timeout: float = 5.0) -> None:
        """(Re)connect, dropping whatever an earlier connection left unread."""
        self.close()
        try:
            if self.unix_path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(self.unix_path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection(self.tcp, timeout=timeout)
        except OSError as e:
            raise GuestConnectionError(f"cannot connect to {self._where()}: {e}") from e
        self._sock = sock
        self._buf = bytearray()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
        self._buf = bytearray()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def __enter__(self) -> "GuestChannel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _where(self) -> str:
        return self.unix_path if self.unix_path is not None else "%s:%s" % self.tcp

    # -- commands -----------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 60) -> float:
        """Ping the guest shell until it answers; reconnect whenever the socket fails.

        Bytes sent before the guest opens ttyS1 are lost, so a ping (the no-op command ``:``,
        each with its own id) is sent every 0.2 s (every 1 s after 15 s), and an answer to any
        of them counts. QEMU serves one client per socket: close other channels first.
        Returns the seconds waited.
        """
        start = time.monotonic()
        deadline = start + timeout
        last_error: Exception | None = None
        ids: list[bytes] = []
        next_ping = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise GuestTimeoutError(
                    f"guest shell on {self._where()} did not answer within {timeout:.0f} s"
                    f" (last error: {last_error})")
            try:
                if self._sock is None:
                    self.connect(timeout=min(5.0, deadline - now))
                    ids, next_ping = [], 0.0
                if now >= next_ping:
                    cid = uuidlib.uuid4().hex[:16].encode()
                    self._send(b"\n__C__ " + cid + b" " + base64.b64encode(b":") + b"\n")
                    ids.append(cid)
                    next_ping = now + (0.2 if now - start < 15 else 1.0)
                m = re.search(rb"\n__E__(?:" + b"|".join(ids) + rb") 0\r?\n", self._buf)
                if m:
                    del self._buf[:m.end()]
                    return time.monotonic() - start
                if len(self._buf) > 4096:
                    del self._buf[:-4096]
                self._recv(max(0.01, min(next_ping, deadline) - time.monotonic()))
            except GuestConnectionError as e:
                last_error = e
                self.close()
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def run(self, cmd: str, timeout: float = 60) -> str:
        """Run ``cmd`` in the guest shell; return its stdout+stderr (exact bytes, decoded).

        Raises :class:`GuestCommandError` on a non-zero exit code, :class:`GuestTimeoutError`
        if the end marker does not come in time, :class:`GuestConnectionError` if the socket
        fails (then the command may or may not have run).
        """
        rc, out = self.run_rc(cmd, timeout=timeout)
        if rc != 0:
            raise GuestCommandError(cmd, rc, out)
        return out

    def run_rc(self, cmd: str, timeout: float = 60) -> tuple[int, str]:
        """Like :meth:`run` but return ``(rc, output)`` instead of raising on rc != 0."""
        if self._sock is None:
            self.connect(timeout=min(5.0, timeout))
        cid = uuidlib.uuid4().hex[:16].encode()
        payload = base64.b64encode(cmd.encode())
        self._send(b"\n__C__ " + cid + b" " + payload + b"\n")
        begin = b"__B__" + cid + b"\n"
        end_re = re.compile(rb"\n__E__" + cid + rb" (-?\d+)\r?\n")
        end_max = len(cid) + 32            # longest possible end marker
        deadline = time.monotonic() + timeout
        framed = False                     # self._buf starts with our begin marker
        scanned = 0                        # bytes of self._buf already searched for the end
        while True:
            buf = self._buf
            if not framed:
                i = buf.find(begin)
                if i >= 0:
                    del buf[:i]            # drop leftovers of earlier commands/connections
                    framed, scanned = True, len(begin)
                elif len(buf) >= len(begin):
                    del buf[:len(buf) - len(begin) + 1]
            if framed:
                m = end_re.search(buf, max(len(begin), scanned - end_max))
                if m:
                    rc, out = int(m.group(1)), bytes(buf[len(begin):m.start()])
                    del buf[:m.end()]      # (m's groups read buf: take them first)
                    return rc, out.decode("utf-8", errors="replace")
                scanned = len(buf)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GuestTimeoutError(f"guest command {cmd!r} did not finish within {timeout} s")
            self._recv(remaining)

    def _send(self, data: bytes) -> None:
        try:
            self._sock.settimeout(10)
            self._sock.sendall(data)
        except OSError as e:
            self.close()
            raise GuestConnectionError(f"send to {self._where()} failed: {e}") from e

    def _recv(self, timeout: float) -> None:
        try:
            self._sock.settimeout(max(0.01, min(timeout, 1.0)))
            chunk = self._sock.recv(self._READ_SIZE)
        except socket.timeout:
            return
        except OSError as e:
            self.close()
            raise GuestConnectionError(f"receive from {self._where()} failed: {e}") from e
        if not chunk:
            self.close()
            raise GuestConnectionError(f"{self._where()} closed the connection")
        self._buf += chunk


def boot(conn, name: str, workdir: os.PathLike | str, disk_path: os.PathLike | str,
         disk_format: str = "qcow2", memory_mib: int | None = None, timeout: float | None = None,
         image: Image | None = None):
    """Create a transient domain from :func:`domain_xml` and wait until its shell answers.

    ``image`` defaults to the tiny guest; ``memory_mib`` and ``timeout`` to the image's.
    Returns ``(dom, GuestChannel)``. On failure the domain is destroyed again and the error
    carries the tail of ``workdir/console.log``.
    """
    workdir = Path(workdir)
    image = image or tiny()
    dom = conn.createXML(domain_xml(name, workdir, disk_path, disk_format, memory_mib,
                                    image=image), 0)
    chan = GuestChannel(unix_path=workdir / CMD_SOCK)
    try:
        chan.wait_ready(timeout=timeout or image.boot_timeout)
    except BaseException as e:
        chan.close()
        destroy(conn, name)
        if isinstance(e, GuestError):
            raise GuestError(f"{e}\n--- {workdir / CONSOLE_LOG} (tail) ---\n"
                             f"{console_tail(workdir)}") from e
        raise
    return dom, chan


def destroy(conn, name: str) -> bool:
    """Destroy (and undefine, if persistent) the domain ``name``; False if it did not exist."""
    import libvirt  # imported here so that domain_xml/GuestChannel need no libvirt-python

    # Look it up through the list: lookupByName on a missing name makes libvirt print an error.
    doms = [d for d in conn.listAllDomains() if d.name() == name]
    if not doms:
        return False
    dom = doms[0]
    persistent = dom.isPersistent()
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError as e:
        if e.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
            raise
    try:
        if persistent:
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                              | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
    return True


def console_tail(workdir: os.PathLike | str, nbytes: int = 4000) -> str:
    """The last ``nbytes`` of ``workdir/console.log`` (ttyS0), or '' if it does not exist."""
    path = Path(workdir) / CONSOLE_LOG
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
