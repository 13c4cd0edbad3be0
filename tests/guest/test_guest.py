"""The tiny test guest on real libvirt (qemu:///system, TCG): boot, commands, save/restore."""

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import libvirt
import pytest

from stack.guest import (GUEST_DIR, GuestChannel, GuestCommandError, boot, console_tail, destroy,
                         ensure_built)
from stack.guest.guest import REPO_DIR

TMP_ROOT = REPO_DIR / ".state" / "tmp"


def measure(name, value, unit):
    print(f"MEASURE {name} = {value:.3f} {unit}" if isinstance(value, float)
          else f"MEASURE {name} = {value} {unit}")


@pytest.fixture(scope="module")
def conn():
    subprocess.run([str(REPO_DIR / "scripts" / "setup-host.sh")], check=True)
    t = time.monotonic()
    ensure_built(GUEST_DIR)
    measure("guest build (no-op when up to date)", time.monotonic() - t, "s")
    c = libvirt.open("qemu:///system")
    yield c
    c.close()


@pytest.fixture
def workdir():
    """A fresh per-test directory that user libvirt-qemu can reach (0755, root-owned)."""
    TMP_ROOT.mkdir(parents=True, exist_ok=True)
    for d in (REPO_DIR / ".state", TMP_ROOT):
        os.chmod(d, 0o755)
    w = TMP_ROOT / f"cltest-guest-{secrets.token_hex(4)}"
    w.mkdir()
    os.chmod(w, 0o755)
    yield w
    shutil.rmtree(w, ignore_errors=True)


@pytest.fixture
def vm(conn, workdir):
    """A booted guest on a qcow2 copy-on-write over a private copy of disk.raw."""
    base = workdir / "base.raw"
    shutil.copyfile(GUEST_DIR / "disk.raw", base)
    top = workdir / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                    str(top)], check=True)
    name = f"cltest-guest-{secrets.token_hex(4)}"
    chan = None
    try:
        t = time.monotonic()
        dom, chan = boot(conn, name, workdir, top, "qcow2")
        measure("boot to shell", time.monotonic() - t, "s")
        yield conn, name, dom, chan, workdir
    finally:
        if chan is not None:
            chan.close()
        destroy(conn, name)


def read_int(chan, path):
    return int(chan.run(f"cat {path}").strip())


def uptime(chan):
    return float(chan.run("cut -d' ' -f1 /proc/uptime").strip())


def test_commands_and_save_restore(vm):
    conn, name, dom, chan, workdir = vm

    assert chan.run("echo hi") == "hi\n"
    assert chan.run("cat /mnt/hello.txt") == "hello from the cloudlet test disk\n"
    assert chan.run("printf 'a\\nb'") == "a\nb"                    # no trailing newline kept
    assert chan.run("echo out; echo err >&2") == "out\nerr\n"     # stderr is merged
    big = chan.run("seq 1 20000")                                 # many partial reads
    assert big.splitlines() == [str(i) for i in range(1, 20001)]

    with pytest.raises(GuestCommandError) as ei:
        chan.run("echo oops; (exit 7)")
    assert ei.value.rc == 7 and ei.value.output == "oops\n"

    chan.run("X=42")
    rc, out = chan.run_rc("if then")                              # syntax error: shell survives
    assert rc == 2 and "syntax error" in out
    assert chan.run("echo $X") == "42\n"

    t1 = read_int(chan, "/run/tick")
    time.sleep(2)
    t2 = read_int(chan, "/run/tick")
    assert t2 > t1
    up_before = uptime(chan)
    # The tick is on ttyS0 (console.log), never on the command port.
    assert "tick " in console_tail(workdir)

    save = workdir / "save.img"
    chan.close()
    t = time.monotonic()
    conn.lookupByName(name).save(str(save))
    measure("save", time.monotonic() - t, "s")
    measure("save image size", save.stat().st_size // (1024 * 1024), "MiB")
    assert name not in [d.name() for d in conn.listAllDomains()]

    t = time.monotonic()
    conn.restore(str(save))
    measure("restore", time.monotonic() - t, "s")
    t = time.monotonic()
    chan.wait_ready(timeout=30)                                   # new QEMU, new socket
    measure("restore to shell", time.monotonic() - t, "s")

    assert chan.run("echo $X") == "42\n"                          # shell state survived
    t3 = read_int(chan, "/run/tick")
    assert t3 >= t2
    assert uptime(chan) >= up_before                              # no reboot
    time.sleep(1.2)
    assert read_int(chan, "/run/tick") > t3                       # and it keeps ticking

    # QEMU serves one client per chardev socket: once this one closes, a new channel (e.g. from
    # another process) talks to the same shell.
    chan.close()
    with GuestChannel(unix_path=workdir / "cmd.sock") as other:
        other.wait_ready(timeout=10)
        assert other.run("echo $X") == "42\n"


def test_hotplugged_nic_gets_dhcp(vm):
    conn, name, dom, chan, workdir = vm
    assert chan.run("ls /sys/class/net") == "lo\n"
    t = time.monotonic()
    # User-mode networking: QEMU's built-in DHCP server hands out 10.0.2.15.
    dom.attachDeviceFlags("<interface type='user'><model type='virtio'/></interface>",
                          libvirt.VIR_DOMAIN_AFFECT_LIVE)
    deadline = time.monotonic() + 20
    while True:
        rc, out = chan.run_rc("cat /run/net/eth0/ip")
        if rc == 0:
            break
        assert time.monotonic() < deadline, chan.run("cat /run/net/*/udhcpc.log; ip addr || true")
        time.sleep(0.2)
    measure("NIC hotplug to DHCP lease", time.monotonic() - t, "s")
    assert out.strip() == "10.0.2.15"
    assert "10.0.2.15/24" in chan.run("ip -4 addr show dev eth0")
    assert "default via 10.0.2.2" in chan.run("ip route")
