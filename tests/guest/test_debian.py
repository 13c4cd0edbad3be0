"""The Debian 12 test guest on real libvirt (TCG): what the builder made, and the cloudlet
story on it through the ``cloudlet`` CLI (plain OS base -> install an app offline -> overlay ->
synthesis over HTTP -> the same running system).

The guest is built once into the cache (``stack.guest.debian``); a failing build fails these
tests. One source VM (1 GiB, booted from a raw copy of the guest's disk) serves both tests.
"""

import shlex
import time
import uuid

import pytest

from stack import story as storymod
from stack.guest import debian
from stack.httpserve import FileServer
from tests.conftest import scratch_root

APP = "nginx-light"
RAM_PORT = 8077
# A process whose state (a random token) exists only in its memory; it tells its PID and token
# to whoever connects, as an HTTP answer. The guest's client is busybox wget, under coreutils'
# timeout: Debian 12's busybox wget crashes (SIGSEGV) with its own -T.
RAM_STATE = r"""
import os, secrets, socket
token = secrets.token_hex(16).encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d))
s.listen(4)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\n\r\n%%d %%s\n" %% (os.getpid(), token))
    c.close()
""" % RAM_PORT
OBSERVE = ("echo boot_id=$(cat /proc/sys/kernel/random/boot_id); "
           "echo uptime=$(cut -d' ' -f1 /proc/uptime); echo tick=$(cat /run/tick); "
           "echo counter_pid=$(systemctl show -p MainPID --value cltest-counter); "
           "echo counter_since=$(systemctl show -p ActiveEnterTimestampMonotonic --value "
           "cltest-counter); "
           "echo ram=$(timeout 10 busybox wget -qO- http://127.0.0.1:%d/); "
           "echo ram_pid=$(systemctl show -p MainPID --value cltest-ramstate); "
           "echo web=$(timeout 10 busybox wget -qO- http://127.0.0.1/); "
           "echo nginx_pid=$(systemctl show -p MainPID --value nginx); "
           "echo var=$STORY_VAR" % RAM_PORT)
# Read from the disk, not the page cache: what the synthesized disk holds.
ON_DISK = ("sync; echo 3 > /proc/sys/vm/drop_caches; "
           "echo status=$(dpkg-query -W -f '${Status}' %s); "
           "echo nginx_md5=$(md5sum < /usr/sbin/nginx); "
           "echo page=$(cat /var/www/html/index.html)" % APP)


def measure(name, seconds):
    print("MEASURE debian %s = %.1f s" % (name, seconds))


def poll(chan, cmd, deadline, what):
    """Run ``cmd`` in the guest until it exits 0; return its output. Fails at ``deadline``."""
    while True:
        rc, out = chan.run_rc(cmd, timeout=max(5, deadline - time.monotonic()))
        if rc == 0:
            return out
        if time.monotonic() > deadline:
            pytest.fail("%s: %r still exits %d: %s" % (what, cmd, rc, out[-500:]))
        time.sleep(0.5)


@pytest.fixture(scope="module")
def debian_source(libvirt_conn):
    """``(story, source domain, state of systemd)``: the plain Debian guest, booted and settled."""
    t = time.monotonic()
    image = debian.image()
    measure("guest build (cached: ~0)", time.monotonic() - t)
    story = storymod.Story(libvirt_conn, scratch_root("debian"), image=image)
    try:
        t = time.monotonic()
        source = story.boot_source(disk_format="raw")
        measure("boot to channel", time.monotonic() - t)
        with story.channel(source) as chan:
            _, state = chan.run_rc("systemctl is-system-running --wait", timeout=240)
        measure("boot to systemd running", time.monotonic() - t)
        yield story, source, state.strip()
    finally:
        story.cleanup()


def test_debian_guest_is_what_the_builder_says(debian_source):
    story, source, state = debian_source
    with story.channel(source) as chan:
        failed = chan.run("systemctl --failed --no-legend --plain")
        assert state == "running", failed
        assert chan.run("cat /proc/1/comm").strip() == "systemd"
        assert chan.run("ps -p 1 -o comm=").strip() == "systemd"
        assert chan.run("uname -r").strip() == (
            story.image.directory / "kernel-version").read_text().strip()
        assert "cltest-debian" in chan.run("hostname")
        # The channel is the tiny guest's shell loop: state persists between commands.
        chan.run("CHANNEL_VAR=%s" % source)
        assert chan.run("echo $CHANNEL_VAR").strip() == source
        # The counter counts, and keeps its count in its process.
        assert chan.run("systemctl is-active cltest-counter").strip() == "active"
        first = int(chan.run("cat /run/tick"))
        deadline = time.monotonic() + 30
        poll(chan, "test $(cat /run/tick) -gt %d" % (first + 1), deadline, "counter")
        # DHCP on any NIC; nothing in the background that takes the dpkg lock.
        assert chan.run("systemctl is-active systemd-networkd").strip() == "active"
        assert "Name=en* eth*" in chan.run("cat /etc/systemd/network/50-any.network")
        for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer"):
            assert chan.run_rc("systemctl is-enabled " + unit)[1].strip() == "masked"
        # The apps are staged, not installed.
        for app in debian.APPS:
            debs = chan.run("ls %s/%s/" % (debian.DEBS_DIR, app)).split()
            assert any(d.startswith(app + "_") and d.endswith(".deb") for d in debs), debs
        assert chan.run_rc("dpkg-query -W -f '${Status}' %s" % APP)[0] != 0


def test_debian_story_through_the_cli(debian_source, libvirt_conn):
    story, source, _ = debian_source
    start = time.monotonic()
    t = time.monotonic()
    base_id = story.create_base(source, name="debian-plain")
    measure("base create (1 GiB, raw source)", time.monotonic() - t)
    assert libvirt_conn.lookupByName(source).isActive()

    t = time.monotonic()
    customized = story.resume(base_id)
    page, var = uuid.uuid4().hex, uuid.uuid4().hex
    with story.channel(customized) as chan:
        measure("resume", time.monotonic() - t)
        assert chan.run_rc("dpkg-query -W -f '${Status}' %s" % APP)[0] != 0
        t = time.monotonic()
        chan.run("dpkg -i %s/%s/*.deb > /root/dpkg.log 2>&1 || { tail -20 /root/dpkg.log; false; }"
                 % (debian.DEBS_DIR, APP), timeout=360)
        measure("dpkg -i %s (offline)" % APP, time.monotonic() - t)
        chan.run("echo %s > /var/www/html/index.html" % page)
        chan.run("systemd-run --quiet --unit=cltest-ramstate /usr/bin/python3 -c %s"
                 % shlex.quote(RAM_STATE))
        deadline = time.monotonic() + 60
        poll(chan, "timeout 10 busybox wget -qO- http://127.0.0.1:%d/" % RAM_PORT, deadline, "RAM state")
        poll(chan, "timeout 10 busybox wget -qO- http://127.0.0.1/ | grep -qx %s" % page, deadline,
             "nginx")
        chan.run("STORY_VAR=%s; sync" % var)
        expected = storymod.parse_observation(chan.run(OBSERVE))
        expected.update(storymod.parse_observation(chan.run(ON_DISK)))
    assert expected["web"] == page and expected["var"] == var
    assert expected["status"] == "install ok installed"
    ram_pid, token = expected["ram"].split()
    assert ram_pid == expected["ram_pid"] and len(token) == 32

    t = time.monotonic()
    overlay = story.create_overlay(customized, story.root + "/overlay.zip")
    measure("overlay create", time.monotonic() - t)
    print("MEASURE debian overlay size = %.1f MiB (sources %s)"
          % (overlay["size"] / 2 ** 20, overlay["sources"]))
    assert libvirt_conn.lookupByName(customized).isActive()

    t = time.monotonic()
    with FileServer(story.root) as server:
        synthesized, result = story.synthesize(server.url("overlay.zip"), role="syn")
        assert any(r and r.startswith("bytes=") for _, r in server.requests)
    measure("synthesis over HTTP (CLI)", time.monotonic() - t)
    print("MEASURE debian synthesis timings %s" % result["timings"])
    assert result["domain"] == synthesized
    with story.channel(synthesized) as chan:
        observed = storymod.parse_observation(chan.run(OBSERVE))
        observed.update(storymod.parse_observation(chan.run(ON_DISK)))
    # The web server answers with the customized page; the RAM-only process is the same
    # process with the same token; the channel shell kept its variable.
    assert observed["web"] == page
    assert observed["ram"] == expected["ram"]
    assert observed["ram_pid"] == ram_pid
    assert observed["nginx_pid"] == expected["nginx_pid"] != "0"
    assert observed["var"] == var
    # No reboot: same boot, same counter process, and the count went on.
    assert observed["boot_id"] == expected["boot_id"]
    assert observed["counter_pid"] == expected["counter_pid"] != "0"
    assert observed["counter_since"] == expected["counter_since"]
    assert int(observed["tick"]) >= int(expected["tick"])
    assert float(observed["uptime"]) >= float(expected["uptime"])
    # The synthesized disk holds the installed package and the page.
    assert observed["status"] == "install ok installed"
    assert observed["nginx_md5"] == expected["nginx_md5"]
    assert observed["page"] == page
    measure("story (base create to checks)", time.monotonic() - start)
