"""Process control: commands, PID files, starting and stopping services, waiting for them.

Every service runs as a process started here (no systemd), in its own session, with its PID in
STATE/run/NAME.pid (and the hash of its configuration in STATE/run/NAME.hash) and its output
appended to STATE/logs/NAME.log.
"""
import hashlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from . import topology
from .paths import ROOT, VBIN, StackError


def sh(argv, check=True, env=None, timeout=300, quiet=True):
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise StackError("%s failed (rc %d): %s" % (" ".join(argv[:4]), r.returncode,
                                                   (r.stderr or r.stdout).strip()[-2000:]))
    return r


def port_open(port, host=None):
    """Something listens on HOST (default: where cloud a's services listen) port PORT."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host or topology.Cloud("a").host, port)) == 0


def http_status(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None


def pid_alive(pid):
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap if it is our dead child
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()[0]
        return st not in ("Z", "X")
    except OSError:
        return False


def read_pid(p, name):
    try:
        with open(p.pidfile(name)) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


_CHILDREN = {}  # pid -> Popen of the processes this Python process started


def running(p, name):
    """PID of service NAME of state dir P if it runs, else None."""
    pid = read_pid(p, name)
    if pid in _CHILDREN:  # our child: right after fork its cmdline is still ours
        return pid if _CHILDREN[pid].poll() is None else None
    if pid and pid_alive(pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            return None
        # Guard against PID reuse: our processes name the state dir or their program.
        if p.state.encode() in cmd or name.encode() in cmd or b"mariadbd" in cmd \
                or b"beam" in cmd:
            return pid
    return None


def tail(path, n=25):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return "(no log at %s)" % path


def fail(p, name, reason):
    log = p.log(name)
    msg = "---- tail of %s ----\n%s\n----\nstack: %s failed: %s" % (log, tail(log), name, reason)
    raise StackError(msg)


def wait(cond, timeout, p=None, name=None, what=""):
    """Poll COND until true; fail (with the tail of NAME's log) if NAME exits or on timeout."""
    deadline = time.time() + timeout
    last = None
    while True:
        try:
            if cond():
                return
        except StackError:
            raise
        except Exception as e:
            last = e
        if p is not None and name and not running(p, name):
            fail(p, name, "process exited while waiting for %s" % what)
        if time.time() > deadline:
            if last is not None:
                what += " (last error: %s: %s)" % (type(last).__name__, str(last)[:300])
            if p is not None and name:
                fail(p, name, "timeout after %ds waiting for %s" % (timeout, what))
            raise StackError("timeout after %ds waiting for %s" % (timeout, what))
        time.sleep(0.3)


def service_env(p, extra=None):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("OS_") or k in ("PYTHONPATH",):
            env.pop(k)
    env["PATH"] = ":".join([p.bin, VBIN, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                            "/usr/bin", "/sbin", "/bin"])
    env["HOME"] = p.state
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # This checkout's packages (the driver, the API router), not those of the checkout whose
    # editable install the venv holds (a worktree shares the main checkout's venv).
    env["PYTHONPATH"] = ROOT
    if extra:
        env.update(extra)
    return env


def start(p, name, argv, env=None, cfg_hash=""):
    """Start argv in its own session, output appended to its log, PID in run/NAME.pid."""
    logf = open(p.log(name), "ab")
    logf.write(("\n==== %s stack starts %s\n" % (time.strftime("%F %T"), name)).encode())
    logf.flush()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                            env=env or service_env(p), cwd=p.state, start_new_session=True,
                            close_fds=True)
    logf.close()
    _CHILDREN[proc.pid] = proc
    with open(p.pidfile(name), "w") as f:
        f.write("%d\n" % proc.pid)
    with open(os.path.join(p.run, name + ".hash"), "w") as f:
        f.write(cfg_hash)
    return proc.pid


def _kill(pid, group, sig):
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_pid(pid, group=True, timeout=10.0):
    if not pid_alive(pid):
        return
    _kill(pid, group, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        _kill(pid, group, signal.SIGKILL)
        for _ in range(50):
            if not pid_alive(pid):
                break
            time.sleep(0.1)
    if group:  # leftovers of the process group
        _kill(pid, True, signal.SIGKILL)


# Seconds between SIGTERM and SIGKILL (nova-compute ignores SIGTERM; the other OpenStack
# services often hang in thread joins after it).
STOP_TIMEOUT = {"mariadb": 30.0, "rabbitmq": 20.0, "ovsdb-server": 5.0, "ovs-vswitchd": 5.0}
DEFAULT_STOP_TIMEOUT = 3.0
DETACHED = {"ovsdb-server", "ovs-vswitchd", "epmd"}  # they daemonize themselves and write the pidfile


def stop(p, name):
    pid = running(p, name)
    if pid:
        stop_pid(pid, group=name not in DETACHED, timeout=STOP_TIMEOUT.get(name, DEFAULT_STOP_TIMEOUT))
    for suffix in (".pid", ".hash"):
        try:
            os.unlink(os.path.join(p.run, name + suffix))
        except OSError:
            pass
    return pid


def cfg_hash(paths):
    h = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except OSError:
            pass
    return h.hexdigest()


def state_processes(p, epmd=True):
    """PIDs of processes that name this state dir on their command line (privsep helpers,
    dnsmasq, ...), excluding ourselves; with EPMD also RabbitMQ's epmd started from it."""
    pids = []
    needle = p.state.encode() + b"/"
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
            if needle in cmd:
                pids.append(int(d))
            elif epmd and os.path.basename(cmd.split(b"\0")[0]) == b"epmd":
                # RabbitMQ's epmd daemonizes; ours inherited HOME=STATE/rabbitmq.
                with open("/proc/%s/environ" % d, "rb") as f:
                    if b"\0HOME=" + p.state.encode() + b"/rabbitmq\0" in b"\0" + f.read():
                        pids.append(int(d))
        except OSError:
            pass
    return pids


def strays(p, names):
    """PIDs of this state dir's processes that run one of the service binaries ``names``."""
    out = []
    for pid in state_processes(p, epmd=False):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(os.path.basename(a).decode(errors="replace") in names for a in argv[:2]):
            out.append(pid)
    return out


def rss_kb(pid):
    """RSS of a process and its process group (shared pages count once per process)."""
    total = 0
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,rss="], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        a, g, r = line.split()
        if int(g) == pid or int(a) == pid:
            total += int(r)
    return total
