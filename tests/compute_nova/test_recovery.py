"""The pure parts of the start-up recovery: the scratch directory and qemu-nbd orphans.
The whole of it runs on the real stack in tests/e2e/test_faults.py."""

from cloudlet_compute.nova import recovery


def test_clear_scratch_removes_every_entry(tmp_path):
    (tmp_path / "overlay-x").mkdir()
    (tmp_path / "overlay-x" / "stream.raw").write_bytes(b"x")
    (tmp_path / ".overlay-y").write_bytes(b"y")
    assert recovery.clear_scratch(str(tmp_path)) == [".overlay-y", "overlay-x"]
    assert list(tmp_path.iterdir()) == []
    assert recovery.clear_scratch(str(tmp_path / "missing")) == []


def _process(proc, pid, *argv):
    d = proc / str(pid)
    d.mkdir()
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_orphan_nbd_pids_are_qemu_nbd_serving_a_file_under_the_roots(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "self").mkdir()
    _process(proc, 10, "/usr/bin/qemu-nbd", "--socket", "/srv/inst/abc/nbd.sock",
             "/srv/inst/abc/disk")
    _process(proc, 11, "qemu-nbd", "/srv/other/disk")                    # not ours
    _process(proc, 12, "/usr/bin/python3", "/srv/inst/abc/disk")         # not qemu-nbd
    _process(proc, 13, "qemu-nbd", "/srv/instances-b/disk")             # a sibling dir
    assert recovery.orphan_nbd_pids(["/srv/inst", "/srv/cache"], proc=str(proc)) == [10]
