"""Tempest's curated compute subset (``python -m stack.tempest --subset``) passes on the
embedded stack with CloudletDriver and our API router: installing OpenStack++ leaves plain
servers working."""

import os
import re
import subprocess
import sys

from stack.guest import guest


def test_tempest_compute_subset_passes(stack_up):
    run = subprocess.run([sys.executable, "-m", "stack.tempest", "--subset"], capture_output=True,
                         text=True, timeout=2400, cwd=str(guest.REPO_DIR),
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out = run.stdout + run.stderr
    totals = dict(re.findall(r"^ - (Passed|Failed|Skipped): (\d+)$", out, re.M))
    assert run.returncode == 0 and totals.get("Failed") == "0", out[-6000:]
    assert int(totals["Passed"]) >= 35, out[-3000:]
