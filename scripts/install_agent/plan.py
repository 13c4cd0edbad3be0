"""The plan of install, applying it with backups and a manifest, and uninstall from it."""

import datetime
import hashlib
import json
import os
import shutil

from .constants import COMPUTE_DRIVER, HORIZON_ENABLED_NAME, PACKAGE, PASTE_APP_FACTORY, \
    PASTE_KEY, PASTE_SECTION, SCHEDULER_WEIGHERS, SCHEDULER_WEIGHERS_COMMENT
from .ini import ini_set
from .report import Failed, Refused, log
from .target import read_text, sh


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    try:
        with open(path, "rb") as f:
            return sha256(f.read())
    except FileNotFoundError:
        return None


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

def desired_files(t, opts):
    """[(path, new bytes or None to leave as is, services to restart)] for the target now."""
    facts = t.probe()
    out = []
    paste = read_text(t.paste_ini)
    out.append((t.paste_ini, ini_set(paste, PASTE_SECTION, PASTE_KEY, PASTE_APP_FACTORY),
                ["nova-api"]))
    comp = ini_set(read_text(t.compute_conf), "DEFAULT", "compute_driver", COMPUTE_DRIVER)
    settings = [("cloudlet", key, value, comment) for key, value, comment in
                t.cloudlet_options()] + [("filter_scheduler", "weight_classes",
                                          ",".join(SCHEDULER_WEIGHERS),
                                          SCHEDULER_WEIGHERS_COMMENT)]
    if t.compute_conf == t.nova_conf:
        for section, key, value, comment in settings:
            comp = ini_set(comp, section, key, value, comment)
    else:
        nova = read_text(t.nova_conf)
        for section, key, value, comment in settings:
            nova = ini_set(nova, section, key, value, comment)
        out.append((t.nova_conf, nova, ["nova-api", "nova-scheduler", "nova-compute"]))
    out.append((t.compute_conf, comp, ["nova-compute"]))
    if opts.get("shim_source") and facts.get("nova_virt"):
        out.append((os.path.join(facts["nova_virt"], "cloudlet", "__init__.py"),
                    opts["shim_source"], ["nova-compute"]))
    if facts.get("dashboard") and opts.get("horizon", "auto") != "skip" and \
            opts.get("horizon_enabled"):
        out.append((os.path.join(facts["dashboard"], "local", "enabled", HORIZON_ENABLED_NAME),
                    opts["horizon_enabled"], ["horizon"]))
    return out


def install_plan(t, opts):
    """The changes install would make, as data: [{path, action, content, services}]. Empty when
    everything is as OpenStack++ needs it (the second install)."""
    plan = []
    for path, text, services in desired_files(t, opts):
        data = text.encode("utf-8", "surrogateescape")
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read() == data:
                    continue
            action = "modify"
        else:
            action = "create"
        plan.append({"path": path, "action": action, "content": data, "services": services})
    facts = t.probe()
    if not facts["package"]:
        plan.append({"package": PACKAGE, "action": "pip-install", "wheel": opts.get("wheel"),
                     "services": ["nova-api", "nova-compute"]})
    return plan


def _pip(t, args):
    """pip of the target's python; a distribution's python (PEP 668: externally managed, as
    Debian's /usr/bin/python3 for packaged OpenStack) gets --break-system-packages."""
    argv = [t.python, "-m", "pip", "--disable-pip-version-check"] + args
    r = sh(argv, timeout=900)
    if r.returncode != 0 and "externally-managed-environment" in r.stderr:
        r = sh(argv + ["--break-system-packages"], timeout=900)
    return r


def load_manifest(t):
    try:
        with open(t.manifest_path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save_manifest(t, m):
    tmp = t.manifest_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(m, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, t.manifest_path)


def _write_like(path, data, like=None, mode=0o644):
    """Write ``data`` to ``path`` atomically, with the mode and owner of ``like``."""
    st = os.stat(like) if like and os.path.exists(like) else None
    tmp = path + ".openstackpp-tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, st.st_mode & 0o7777 if st else mode)
    if st:
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except OSError:
            pass
    os.replace(tmp, path)


def apply_plan(t, plan, manifest=None):
    """Make the changes, recording each (sha256 before/after, backup) in the manifest.
    Returns (manifest, services to restart)."""
    os.makedirs(os.path.join(t.backup_dir, "files"), mode=0o700, exist_ok=True)
    m = manifest or {"version": 1, "installed_at": utcnow(), "layout": t.layout,
                     "target": t.describe(), "python": t.python, "changes": [],
                     "package": None}
    services = []
    for step in plan:
        for s in step["services"]:
            if s not in services:
                services.append(s)
        if "package" in step:
            if not step.get("wheel"):
                raise Failed("%s is not installed in %s and no wheel was given" % (
                    PACKAGE, t.python))
            log("pip install %s into %s" % (os.path.basename(step["wheel"]), t.python))
            r = _pip(t, ["install", "--no-input", step["wheel"]])
            if r.returncode != 0:
                raise Failed("pip install failed: %s" % r.stderr.strip()[-1500:])
            m["package"] = {"name": PACKAGE, "before": None, "installed_by_us": True}
            save_manifest(t, m)
            continue
        path, data = step["path"], step["content"]
        entry = {"path": path, "action": step["action"], "sha256_after": sha256(data),
                 "services": step["services"], "backup": None, "sha256_before": None,
                 "created_dirs": []}
        if step["action"] == "modify":
            with open(path, "rb") as f:
                old = f.read()
            backup = os.path.join(t.backup_dir, "files", "%02d-%s" % (
                len(m["changes"]), os.path.basename(path)))
            shutil.copy2(path, backup)
            entry.update(backup=backup, sha256_before=sha256(old))
        else:
            d, missing = os.path.dirname(path), []
            while not os.path.isdir(d):
                missing.append(d)
                d = os.path.dirname(d)
            for d in reversed(missing):
                os.mkdir(d, 0o755)
            entry["created_dirs"] = missing
        m["changes"].append(entry)
        save_manifest(t, m)   # before the write: a crash leaves a restorable record
        _write_like(path, data, like=path if step["action"] == "modify" else None)
        log("%s %s" % ("changed" if step["action"] == "modify" else "created", path))
    if m["package"] is None:
        m["package"] = {"name": PACKAGE, "before": t.probe()["package"], "installed_by_us": False}
    save_manifest(t, m)
    return m, services


def uninstall_check(m):
    """Refuse unless every file is still exactly what install wrote."""
    for c in m["changes"]:
        now = file_sha256(c["path"])
        if now != c["sha256_after"]:
            raise Refused("%s was changed after install (sha256 %s, install wrote %s); "
                          "restore or remove it by hand, nothing was changed" % (
                              c["path"], now and now[:12], c["sha256_after"][:12]))


def uninstall_apply(t, m):
    """Restore every file from its backup (or remove what install created); pip uninstall the
    package if install put it there. Returns the services to restart."""
    services = []
    for c in reversed(m["changes"]):
        for s in c["services"]:
            if s not in services:
                services.append(s)
        if c["action"] == "modify":
            shutil.copy2(c["backup"], c["path"])
            log("restored %s" % c["path"])
        else:
            os.unlink(c["path"])
            cache = os.path.join(os.path.dirname(c["path"]), "__pycache__")
            stem = os.path.splitext(os.path.basename(c["path"]))[0] + "."
            if os.path.isdir(cache):
                for n in os.listdir(cache):
                    if n.startswith(stem):
                        os.unlink(os.path.join(cache, n))
            for d in c.get("created_dirs", []):   # deepest first
                sub = os.path.join(d, "__pycache__")
                if os.path.isdir(sub) and not os.listdir(sub):
                    os.rmdir(sub)
                if os.path.isdir(d) and not os.listdir(d):
                    os.rmdir(d)
            log("removed %s" % c["path"])
    pkg = m.get("package") or {}
    if pkg.get("installed_by_us"):
        r = _pip(t, ["uninstall", "-y", PACKAGE])
        if r.returncode != 0:
            raise Failed("pip uninstall failed: %s" % r.stderr.strip()[-1500:])
        log("pip uninstalled %s from %s" % (PACKAGE, t.python))
        services += [s for s in ("nova-api", "nova-compute") if s not in services]
    return services


def forget(t, m):
    """Remove the manifest and the backups (after a complete uninstall)."""
    for c in m["changes"]:
        if c.get("backup") and os.path.exists(c["backup"]):
            os.unlink(c["backup"])
    os.unlink(t.manifest_path)
    for d in (os.path.join(t.backup_dir, "files"), t.backup_dir):
        if os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)

