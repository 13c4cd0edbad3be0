"""Subprocesses of the handoff bench: commands run inside netns ``stk-b``, children killed
at the end, and waiting for one with its stderr in the error.
"""

import os
import subprocess
import tempfile

from bench.run import BenchError
from stack import topology

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def netns_argv(argv):
    return ["ip", "netns", "exec", topology.LINK_NETNS] + argv


class Procs:
    """Subprocesses of this bench; killed (by their own pid) if still running at the end."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        """Start ``argv``: stdout a pipe, stderr a file (a chatty child never blocks)."""
        err = tempfile.TemporaryFile("w+")
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, **kw)
        p.errfile = err
        self.procs.append(p)
        return p

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.errfile.close()


def stderr_tail(proc):
    proc.errfile.seek(0)
    return proc.errfile.read()[-2000:]


def finish(proc, what, timeout):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError("%s did not finish within %d s: %s" % (what, timeout, stderr_tail(proc)))
    if proc.returncode:
        raise BenchError("%s exited with %d: %s" % (what, proc.returncode, stderr_tail(proc)))
    return out
