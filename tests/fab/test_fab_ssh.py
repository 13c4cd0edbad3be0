"""`fab install` / `fab uninstall` over real SSH onto the embedded stack.

The refusal tests run against the main stack as the session has it (with OpenStack++): a failed
check must leave every file as it was and write no manifest. The story test brings the stack up
WITHOUT OpenStack++, installs it with fab, runs the synthesis story through the Nova API,
installs again (nothing changes), uninstalls (files byte-identical, os-cloudlet gone) and puts
the stack back into its --cloudlet configuration."""

import os
import signal
import subprocess
import time

import stack
from cloudlet_compute import imagemodel as model
from stack.httpserve import FileServer
from tests.compute.test_story import assert_same_guest
from tests.conftest import scratch_root
from tests.fab.conftest import extension_aliases, fab, file_state, sha_state, touched_files
from tests.support import cloud


def state_dir():
    return stack.state_path()


def assert_refused(r, message, files, before, backup):
    assert r.returncode == 2, r.out
    refusals = [line for line in r.out.splitlines() if "refused:" in line]
    assert len(refusals) == 1 and message in refusals[0], r.out
    assert sha_state(files) == before
    assert not os.path.exists(backup)


def test_refuses_unsupported_nova(sshd, stack_up, tmp_path):
    venv = tmp_path / "nova33"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    meta = site / "nova-33.1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: nova\nVersion: 33.1.0\n")
    files = touched_files(state_dir())
    before = sha_state(files)
    backup = tmp_path / "backup"
    r = fab(sshd, "install", "--state-dir", state_dir(), "--backup-dir", backup,
            "--python", venv / "bin" / "python")
    assert_refused(r, "nova 33.1.0 is not supported (supported: 34.0.0)", files, before, backup)


def test_refuses_unreachable_libvirt(sshd, stack_up, tmp_path):
    files = touched_files(state_dir())
    before = sha_state(files)
    backup = tmp_path / "backup"
    r = fab(sshd, "install", "--state-dir", state_dir(), "--backup-dir", backup,
            "--libvirt-uri", "qemu:///system?socket=/nonexistent/libvirt-sock")
    assert_refused(r, "libvirt is not reachable at qemu:///system?socket=/nonexistent",
                   files, before, backup)


def test_refuses_when_nova_compute_is_down(sshd, stack_up, tmp_path):
    files = touched_files(state_dir())
    before = sha_state(files)
    backup = tmp_path / "backup"
    pidfile = os.path.join(state_dir(), "run", "nova-compute.pid")
    pid = int(open(pidfile).read().split()[0])
    try:
        os.killpg(pid, signal.SIGKILL)
        for _ in range(100):
            if not os.path.exists("/proc/%d" % pid):
                break
            time.sleep(0.1)
        r = fab(sshd, "install", "--state-dir", state_dir(), "--backup-dir", backup)
        assert_refused(r, "nova-compute is not running", files, before, backup)
    finally:
        cloud.up()   # starts nova-compute again (same configuration)


def test_uninstall_without_install_does_nothing(sshd, stack_up, tmp_path):
    r = fab(sshd, "uninstall", "--state-dir", state_dir(), "--backup-dir", tmp_path / "none")
    assert r.returncode == 0, r.out
    assert "nothing to uninstall" in r.out


def test_install_story_uninstall(sshd, base_images, tmp_path):
    backup = tmp_path / "backup"
    manifest = backup / "manifest.json"
    files = touched_files(state_dir())
    story = None
    try:
        stack.up(cloudlet=False)
        before = sha_state(files)
        admin = stack.connect("cloudlet-admin")
        assert "os-cloudlet" not in extension_aliases(admin)

        r = fab(sshd, "install", "--state-dir", state_dir(), "--backup-dir", backup)
        assert r.returncode == 0, r.out
        assert "GET /extensions lists os-cloudlet" in r.out
        admin = stack.connect("cloudlet-admin")
        demo = stack.connect("cloudlet-demo")
        assert "os-cloudlet" in extension_aliases(admin)
        assert manifest.exists()
        installed = file_state(files + [str(manifest)])

        # Idempotence: the second install changes nothing (contents and time stamps).
        r = fab(sshd, "install", "--state-dir", state_dir(), "--backup-dir", backup)
        assert r.returncode == 0, r.out
        assert "nothing to change" in r.out and "restarting" not in r.out
        assert file_state(files + [str(manifest)]) == installed

        # The synthesis story through the API on the installed stack.
        base = base_images   # imported once per session (Glance is not ours to change)
        story = cloud.NovaStory(demo, admin)
        resumed = story.boot("resumed", base[model.BASE_DISK])
        expected = story.customize(resumed.id)
        overlay_id = story.overlay_finish(resumed.id)
        served = story.scratch = scratch_root("fab-serve")
        story.download(overlay_id, os.path.join(served, "overlay.zip"))
        with FileServer(served) as server:
            synthesized = story.boot("synth", base[model.BASE_DISK],
                                     overlay_url=server.url("overlay.zip"))
        assert synthesized.status == "ACTIVE"
        assert_same_guest(expected, story.observe(synthesized.id))
        story.cleanup()
        story = None

        r = fab(sshd, "uninstall", "--state-dir", state_dir(), "--backup-dir", backup)
        assert r.returncode == 0, r.out
        assert "GET /extensions does not list os-cloudlet" in r.out
        assert sha_state(files) == before
        assert not backup.exists()
        assert "os-cloudlet" not in extension_aliases(stack.connect("cloudlet-admin"))
    finally:
        if story is not None:
            story.cleanup()
        cloud.up()   # the session's other tests expect the --cloudlet configuration


def test_local_install_refuses_the_same_way(stack_up, tmp_path):
    """`fab local-install` (no SSH) runs the same agent on this machine."""
    files = touched_files(state_dir())
    before = sha_state(files)
    backup = tmp_path / "backup"
    r = subprocess.run([os.path.join(os.path.dirname(stack.__file__), "..", ".venv", "bin", "fab"),
                        "local-install", "--state-dir", state_dir(), "--backup-dir", str(backup),
                        "--libvirt-uri", "qemu:///system?socket=/nonexistent/libvirt-sock"],
                       cwd=os.path.dirname(os.path.dirname(stack.__file__)),
                       capture_output=True, text=True, timeout=600)
    r.out = r.stdout + r.stderr
    assert_refused(r, "No such file or directory", files, before, backup)
