"""The qemu-nbd server dies with the process that started it (no orphan after a SIGKILL)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from cloudlet_compute.host.nbd import NBDServer

HOLDER = """
import sys, time
from cloudlet_compute.host.nbd import NBDServer
server = NBDServer(sys.argv[1], "qcow2", sys.argv[2])
client = server.connect()
client.write(0, b"x" * 4096)
print(server._proc.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1M"], check=True)
    return path


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as stat:  # a zombie waits for its reaper: gone
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_server_reads_back_what_was_written(image, tmp_path):
    with NBDServer(image, "qcow2", str(tmp_path / "nbd.sock")) as server:
        client = server.connect()
        client.write(8192, b"y" * 4096)
        assert client.read(8192, 4096) == b"y" * 4096
        client.close()
    assert not os.path.exists(tmp_path / "nbd.sock")


def test_sigkilled_owner_leaves_no_qemu_nbd(image, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, image, str(tmp_path / "nbd.sock")],
                              stdout=subprocess.PIPE, env=env)
    try:
        server_pid = int(holder.stdout.readline())
        assert _alive(server_pid)
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphan = _alive(server_pid)
    if orphan:
        os.kill(server_pid, signal.SIGKILL)
    assert not orphan, "qemu-nbd %d outlived its SIGKILLed owner" % server_pid
