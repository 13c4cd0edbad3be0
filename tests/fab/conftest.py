"""A private sshd on 127.0.0.1:2222 (key auth only, as root) and helpers to run `fab`."""

import hashlib
import os
import shutil
import socket
import subprocess
import time

import pytest

from stack.guest import guest
from tests.support import processes

ROOT = str(guest.REPO_DIR)
FAB = os.path.join(ROOT, ".venv", "bin", "fab")
SSHD = "/usr/sbin/sshd"
SSH_PORT = 2222


def _port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_openssh_server():
    """openssh-server from Debian (idempotent; also in scripts/setup-host.sh)."""
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "openssh-server"],
                       capture_output=True, text=True)
    if "install ok installed" not in r.stdout or not os.path.exists(SSHD):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "openssh-server"], check=True, env=env)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """sshd as root on 127.0.0.1:2222 with its own config, host key and authorized key."""
    ensure_openssh_server()
    if _port_open(SSH_PORT):
        pytest.fail("127.0.0.1:%d is taken by another process (see `ss -ltnp`)" % SSH_PORT)
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    for name in ("host_key", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tests/fab",
                        "-f", str(d / name)], check=True)
    shutil.copyfile(d / "id_ed25519.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    (d / "sshd_config").write_text("\n".join([
        "Port %d" % SSH_PORT, "ListenAddress 127.0.0.1", "HostKey %s" % (d / "host_key"),
        "PidFile %s" % (d / "sshd.pid"), "AuthorizedKeysFile %s" % (d / "authorized_keys"),
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "UsePAM no",
        "StrictModes no", "Subsystem sftp /usr/lib/openssh/sftp-server", ""]))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # privilege separation directory
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while not _port_open(SSH_PORT):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("sshd did not start: %s" % (d / "sshd.log").read_text())
        time.sleep(0.1)
    try:
        yield {"host": "root@127.0.0.1:%d" % SSH_PORT, "key": str(d / "id_ed25519"),
               "log": str(d / "sshd.log")}
    finally:
        processes.stop(proc)
        log.close()


def fab(sshd, *args, timeout=1200):
    """Run the venv's `fab` against the sshd; CompletedProcess (text) with .out = both."""
    argv = [FAB, "-H", sshd["host"], "-i", sshd["key"]] + [str(a) for a in args]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    r.out = r.stdout + r.stderr
    print("$ %s\n%s" % (" ".join(argv), r.out))
    return r


def file_state(paths):
    """path -> (sha256, mtime_ns) or None when missing."""
    out = {}
    for p in paths:
        try:
            with open(p, "rb") as f:
                out[p] = (hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mtime_ns)
        except FileNotFoundError:
            out[p] = None
    return out


def sha_state(paths):
    return {p: (v[0] if v else None) for p, v in file_state(paths).items()}


def touched_files(state_dir):
    """Every file install may change on the embedded stack (and nova.conf, never changed)."""
    import importlib.util
    etc = os.path.join(state_dir, "etc", "nova")
    virt = list(importlib.util.find_spec("nova.virt").submodule_search_locations)[0]
    dash = list(importlib.util.find_spec("openstack_dashboard").submodule_search_locations)[0]
    return [os.path.join(etc, "api-paste.ini"), os.path.join(etc, "nova-compute.conf"),
            os.path.join(etc, "nova.conf"), os.path.join(virt, "cloudlet", "__init__.py"),
            os.path.join(dash, "local", "enabled", "_1920_project_cloudlet_panel.py")]


def extension_aliases(conn):
    return [e["alias"] for e in conn.compute.get("/extensions").json()["extensions"]]
