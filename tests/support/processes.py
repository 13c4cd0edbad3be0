"""Processes the tests start themselves (sshd, Horizon's dev server)."""

import subprocess


def stop(proc, grace=10):
    """Terminate ``proc``; kill it if it is still there after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
