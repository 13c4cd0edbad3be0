"""A cloud's databases on the shared MariaDB, made on its first `up`, in the background.

``ensure_databases(p, settings)`` starts one thread per component (keystone, glance,
placement, nova_api, nova, neutron) that runs its chain of commands (schema, keystone's
bootstrap, nova's cells) and returns the ``Chains`` that `up` polls to start each service as
soon as its database is ready. A finished chain leaves a marker in STATE/done.
"""
import hashlib
import os
import subprocess
import threading
import time

from . import topology
from .configs import nova_conf_args
from .infra import mysql
from .paths import VBIN, StackError, log
from .processes import service_env, tail
from .topology import ADMIN_PASSWORD, REGION


class Chains:
    """Lists of commands, each list in its own thread (one per component's database setup)."""

    def __init__(self, p, chains):
        self.p, self.errors, self.threads = p, {}, {}
        self.t0 = time.time()
        for name, cmds in chains.items():
            if not os.path.exists(p.marker("db-" + name)):
                t = threading.Thread(target=self._run, args=(name, cmds), daemon=True)
                t.start()
                self.threads[name] = t

    def _run(self, name, cmds):
        p = self.p
        with open(p.log("init-" + name), "ab") as logf:
            for argv, ok_codes in cmds:
                logf.write(("%s $ %s\n" % (time.strftime("%T"), " ".join(argv))).encode())
                logf.flush()
                r = subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT,
                                   env=service_env(p), cwd=p.state)
                if r.returncode not in ok_codes:
                    self.errors[name] = "%s exited %d" % (" ".join(argv[:3]), r.returncode)
                    return
        with open(p.log("init-" + name), "ab") as logf:
            logf.write(("%s done\n" % time.strftime("%T")).encode())
        open(p.marker("db-" + name), "w").close()

    def done(self, *names):
        """True when the named chains finished (raises if one failed)."""
        for name in names:
            t = self.threads.get(name)
            if t is not None and t.is_alive():
                return False
        self.wait(*names)
        return True

    def wait(self, *names):
        for name in names:
            t = self.threads.get(name)
            if t is None:
                continue
            t.join()
            if name in self.errors:
                log_path = self.p.log("init-" + name)
                raise StackError("---- tail of %s ----\n%s\n----\nstack: %s database setup "
                                 "failed: %s" % (log_path, tail(log_path), name,
                                                 self.errors[name]))

    def wait_all(self):
        self.wait(*list(self.threads))
        if self.threads:
            last = max(os.path.getmtime(self.p.marker("db-" + n)) for n in self.threads)
            log("databases initialised in %.1fs" % (last - self.t0))


# `nova-manage cell_v2 map_cell0` and `create_cell --name cell1` in one process (one start-up
# of nova's Python less on the critical path of a cold `up`).
_MAP_CELLS = r"""
import sys
from nova import config, objects
from nova.cmd import manage
config.parse_args(["nova-manage"] + sys.argv[1:])
objects.register_all()
cells = manage.CellV2Commands()
if cells.map_cell0() != 0:
    sys.exit("map_cell0 failed")
rc = cells.create_cell(name="cell1")
sys.exit(0 if rc in (0, 2) else "create_cell failed: %s" % rc)
"""


# Schema templates: the databases right after their migrations, dumped by the first cloud that
# ran them (per set of installed service versions) and loaded by the next cold cloud instead of
# running the migrations again (seconds instead of a minute).
TEMPLATE_DISTS = ("keystone", "glance", "openstack-placement", "nova", "neutron")


def _db_template_dir(p):
    try:
        from importlib import metadata
        key = " ".join("%s=%s" % (d, metadata.version(d)) for d in TEMPLATE_DISTS)
    except Exception:  # noqa: BLE001 - no templates then, migrations as always
        return None
    d = os.path.join(p.infra.state, "dbtemplates", hashlib.sha256(key.encode()).hexdigest()[:16])
    os.makedirs(d, exist_ok=True)
    return d


def ensure_databases(p, settings):
    c = p.c
    sock = p.infra.mysql_sock
    markers = [os.path.exists(p.marker("db-" + n)) for n in
               ("keystone", "glance", "placement", "nova_api", "nova", "neutron")]
    if not all(markers):
        if not c.is_main and not any(markers):
            # A cold cloud sharing the MariaDB: leftovers of a purged state dir go.
            mysql(p, " ".join("DROP DATABASE IF EXISTS %s;" % c.db(n)
                              for n in topology.DATABASES))
        mysql(p, " ".join("CREATE DATABASE IF NOT EXISTS %s CHARACTER SET utf8;" % c.db(n)
                          for n in topology.DATABASES))
    e = p.etc
    k = ["--config-file", os.path.join(e, "keystone", "keystone.conf")]
    b = os.path.join
    _, nova_args = nova_conf_args(p, settings)
    nm = [b(VBIN, "nova-manage")] + nova_args
    neutron = [b(VBIN, "neutron-db-manage"), "--config-file", b(e, "neutron", "neutron.conf"),
               "--config-file", b(e, "neutron", "ml2_conf.ini")]
    ok = (0,)
    tdir = _db_template_dir(p)

    def sh(cmd):
        return (["bash", "-o", "pipefail", "-c", cmd], ok)

    def schema(db, migrate, targets=None):
        """Steps that give database(s) TARGETS (default DB) the migrated schema of DB."""
        targets = targets or [db]
        t = os.path.join(tdir, db + ".sql") if tdir else None
        if t and os.path.exists(t):
            return [sh("mariadb --no-defaults -S %s -uroot %s < %s" % (sock, c.db(x), t))
                    for x in targets]
        steps = [(migrate, ok)]
        if t:
            steps.append(sh("mariadb-dump --no-defaults -S %s -uroot --skip-comments %s > %s.%d"
                            " && mv %s.%d %s" % (sock, c.db(db), t, os.getpid(), t,
                                                 os.getpid(), t)))
        # cell0 gets a copy of the cell schema (same migrations, so the same result as
        # `db sync` without --local_cell, faster).
        for x in targets[1:]:
            steps.append(sh("mariadb-dump --no-defaults -S %s -uroot %s | mariadb --no-defaults"
                            " -S %s -uroot %s" % (sock, c.db(db), sock, c.db(x))))
        return steps

    chains = {
        "keystone": schema("keystone", [b(VBIN, "keystone-manage")] + k + ["db_sync"]) + [
            ([b(VBIN, "keystone-manage")] + k + [
                "bootstrap", "--bootstrap-password", ADMIN_PASSWORD,
                "--bootstrap-username", "admin", "--bootstrap-project-name", "admin",
                "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
                "--bootstrap-region-id", REGION, "--bootstrap-admin-url", c.keystone_url,
                "--bootstrap-public-url", c.keystone_url, "--bootstrap-internal-url",
                c.keystone_url], ok)],
        "glance": schema("glance", [b(VBIN, "glance-manage"), "--config-file",
                                    b(e, "glance", "glance-api.conf"), "db_sync"]),
        "placement": schema("placement", [b(VBIN, "placement-manage"), "--config-file",
                                          b(e, "placement", "placement.conf"), "db", "sync"]),
        # nova_api and the cell database in parallel.
        "nova_api": schema("nova_api", nm + ["api_db", "sync"]) + [
            ([b(VBIN, "python"), "-c", _MAP_CELLS] + nova_args, ok)],
        "nova": schema("nova", nm + ["db", "sync", "--local_cell"], ["nova", "nova_cell0"]),
        "neutron": schema("neutron", neutron + ["upgrade", "heads"]),
    }
    return Chains(p, chains)
