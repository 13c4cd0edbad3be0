"""Fast tests of the install agent (scripts/install_agent/): INI edits, plan, apply,
idempotence, uninstall, refusals, and the agent shipped as one zipapp file.

The target is a temporary copy of the embedded stack's configuration as plain ``python -m stack
up`` renders it; the ground truth for install is what ``python -m stack up --cloudlet``
renders."""

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from contextlib import redirect_stderr

import pytest

import fabfile
import stack
from scripts.install_agent import agent, constants, ini, plan
from scripts.install_agent import target as target_mod
from scripts.install_agent.report import Refused
from scripts.install_agent.target import Target, find_target
from stack import configs, paths
from stack.guest import guest

ROOT = str(guest.REPO_DIR)


def render(state_dir, cloudlet):
    """The nova configuration that ``python -m stack up [--cloudlet]`` writes, into
    ``state_dir``."""
    p = paths.Paths(stack.cloud("a", state_dir))
    for d in ("nova", "glance", "neutron", "keystone", "placement"):
        os.makedirs(os.path.join(p.etc, d), exist_ok=True)
    kw = {}
    if cloudlet:
        import cloudlet_api
        from cloudlet_compute.nova import shim
        kw = dict(compute_driver=shim.DRIVER, api_router=cloudlet_api.PASTE_APP_FACTORY,
                  cloudlet=True)
    configs.write_configs(p, configs.settings(**kw))
    return p


def snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for n in files:
            path = os.path.join(d, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture
def target(tmp_path):
    """A fake embedded target: rendered stock configs, a nova/virt and a Horizon
    local/enabled directory, the package present (as in the venv)."""
    state = str(tmp_path / "state")
    render(state, cloudlet=False)
    (tmp_path / "site" / "nova" / "virt").mkdir(parents=True)
    (tmp_path / "site" / "openstack_dashboard" / "local" / "enabled").mkdir(parents=True)
    opts = {"state_dir": state, "python": sys.executable,
            "stack_dir": os.path.join(ROOT, "stack"),
            "backup_dir": str(tmp_path / "backup"), "no_restart": True}
    opts.update({k[:-4]: __import__("base64").b64decode(v).decode()
                 for k, v in fabfile._local_payload().items()})
    facts = {"python": sys.executable, "nova": "34.0.0", "horizon": "27.0.0",
             "package": "0.1.0", "nova_virt": str(tmp_path / "site" / "nova" / "virt"),
             "dashboard": str(tmp_path / "site" / "openstack_dashboard"), "clouds": None}

    def make(**over):
        t = find_target(dict(opts, **over))
        t.facts = dict(facts)
        return t
    make.opts, make.facts, make.state, make.tmp = opts, facts, state, tmp_path
    return make


def install(t, opts):
    steps = plan.install_plan(t, opts)
    if steps:
        plan.apply_plan(t, steps, plan.load_manifest(t))
    return steps


# --- INI edits -------------------------------------------------------------------------------
def test_ini_set_replaces_value_keeping_everything_else():
    text = "# c\n[DEFAULT]\nlog_file = x\ncompute_driver   =  libvirt.LibvirtDriver  \n\n[x]\n"
    out = ini.ini_set(text, "DEFAULT", "compute_driver", "cloudlet.CloudletDriver")
    assert out == text.replace("libvirt.LibvirtDriver", "cloudlet.CloudletDriver")
    assert ini.ini_get(out, "DEFAULT", "compute_driver") == "cloudlet.CloudletDriver"
    assert ini.ini_set(out, "DEFAULT", "compute_driver", "cloudlet.CloudletDriver") == out


def test_ini_set_inserts_in_section_or_appends_it():
    text = "[DEFAULT]\na = 1\n\n[libvirt]\nvirt_type = qemu\n"
    out = ini.ini_set(text, "DEFAULT", "compute_driver", "c.D")
    assert out == "[DEFAULT]\na = 1\ncompute_driver = c.D\n\n[libvirt]\nvirt_type = qemu\n"
    out = ini.ini_set(text, "cloudlet", "cache_dir", "/v")
    assert out == text + "\n[cloudlet]\ncache_dir = /v\n"
    crlf = "[DEFAULT]\r\na = 1\r\n"
    assert ini.ini_set(crlf, "DEFAULT", "b", "2") == "[DEFAULT]\r\na = 1\r\nb = 2\r\n"
    # A commented-out key is not the key.
    assert ini.ini_get("[DEFAULT]\n#compute_driver = x\n", "DEFAULT", "compute_driver") \
        is None


def test_constants_match_the_package_and_the_pins():
    import cloudlet_api
    from cloudlet_compute.nova import shim
    assert constants.PASTE_APP_FACTORY == cloudlet_api.PASTE_APP_FACTORY
    assert constants.COMPUTE_DRIVER == shim.DRIVER
    pins = open(os.path.join(ROOT, "constraints.txt")).read()
    assert "nova==%s" % constants.SUPPORTED_NOVA[0] in pins.splitlines()
    assert "horizon==%s" % constants.SUPPORTED_HORIZON[0] in pins.splitlines()
    assert os.path.exists(os.path.join(ROOT, "dashboard_panel", "enabled",
                                       constants.HORIZON_ENABLED_NAME))


# --- plan / apply / uninstall ----------------------------------------------------------------
def test_install_makes_exactly_what_up_cloudlet_renders(target, tmp_path):
    etc = os.path.join(target.state, "etc")
    want = snapshot(render(target.state, cloudlet=True).etc)
    stock = snapshot(render(target.state, cloudlet=False).etc)
    assert stock != want
    t = target()
    steps = install(t, target.opts)
    assert sorted(os.path.basename(s["path"]) for s in steps) == [
        constants.HORIZON_ENABLED_NAME, "__init__.py", "api-paste.ini", "nova-compute.conf",
        "nova.conf"]
    assert snapshot(etc) == want   # byte for byte, every file
    from cloudlet_compute.nova import shim
    assert open(shim.shim_path(target.facts["nova_virt"])).read() == shim.SHIM_SOURCE
    m = json.load(open(t.manifest_path))
    assert m["package"] == {"name": "openstackpp", "before": "0.1.0", "installed_by_us": False}
    for c in m["changes"]:
        assert plan.file_sha256(c["path"]) == c["sha256_after"]
        if c["action"] == "modify":
            assert plan.file_sha256(c["backup"]) == c["sha256_before"]


def test_second_install_changes_nothing(target):
    t = target()
    install(t, target.opts)
    before = {p: (os.stat(p).st_mtime_ns, open(p, "rb").read())
              for p in [t.manifest_path, t.paste_ini, t.compute_conf]}
    assert plan.install_plan(target(), target.opts) == []
    assert install(target(), target.opts) == []
    assert {p: (os.stat(p).st_mtime_ns, open(p, "rb").read()) for p in before} == before


def test_uninstall_restores_byte_identical_and_forgets(target):
    before = snapshot(str(target.tmp))
    t = target()
    install(t, target.opts)
    m = plan.load_manifest(t)
    plan.uninstall_check(m)
    services = plan.uninstall_apply(t, m)
    plan.forget(t, m)
    assert set(services) == {"nova-api", "nova-scheduler", "nova-compute", "horizon"}
    assert snapshot(str(target.tmp)) == before   # also: no manifest, no shim dir left
    assert not os.path.exists(str(target.tmp / "backup"))
    assert not os.path.exists(os.path.join(target.facts["nova_virt"], "cloudlet"))


def test_present_files_are_recorded_as_present_and_kept(target):
    """The shim already there (as after `up --cloudlet`): install leaves it, uninstall too."""
    from cloudlet_compute.nova import shim
    path = shim.install(target.facts["nova_virt"])
    t = target()
    steps = install(t, target.opts)
    assert path not in [s["path"] for s in steps]
    m = plan.load_manifest(t)
    plan.uninstall_apply(t, m)
    plan.forget(t, m)
    assert shim.is_installed(target.facts["nova_virt"])


def test_uninstall_refuses_when_a_file_changed_after_install(target):
    t = target()
    install(t, target.opts)
    with open(t.compute_conf, "a") as f:
        f.write("# edited by someone\n")
    snap = snapshot(str(target.tmp))
    with pytest.raises(Refused, match=re.escape(t.compute_conf)):
        plan.uninstall_check(plan.load_manifest(t))
    err = io.StringIO()
    with redirect_stderr(err):
        rc = agent.main(["uninstall", json.dumps(target.opts)])
    assert rc == constants.EXIT_REFUSED
    assert err.getvalue().count("\n") == 1 and t.compute_conf in err.getvalue()
    assert snapshot(str(target.tmp)) == snap


def test_package_missing_is_pip_installed_and_recorded(target):
    t = target()
    t.facts["package"] = None
    steps = plan.install_plan(t, dict(target.opts, wheel="/x.whl"))
    assert steps[-1] == {"package": "openstackpp", "action": "pip-install", "wheel": "/x.whl",
                        "services": ["nova-api", "nova-compute"]}


# --- refusals change nothing -----------------------------------------------------------------
@pytest.mark.parametrize("facts, message", [
    ({"nova": "33.1.0"}, "nova 33.1.0 is not supported (supported: 34.0.0)"),
    ({"nova": None}, "nova is not installed in "),
    ({"horizon": "25.0.0"}, "horizon 25.0.0 is not supported"),
])
def test_version_refusals_change_nothing(target, monkeypatch, facts, message):
    monkeypatch.setattr(Target, "probe",
                        lambda self: dict(target.facts, **facts))
    snap = snapshot(str(target.tmp))
    err = io.StringIO()
    with redirect_stderr(err):
        rc = agent.main(["install", json.dumps(target.opts)])
    assert rc == constants.EXIT_REFUSED
    assert err.getvalue().startswith("openstackpp: refused: ")
    assert message in err.getvalue() and err.getvalue().count("\n") == 1
    assert snapshot(str(target.tmp)) == snap


def test_libvirt_refusal_changes_nothing(target, monkeypatch):
    monkeypatch.setattr(Target, "probe", lambda self: dict(target.facts))
    snap = snapshot(str(target.tmp))
    opts = dict(target.opts, libvirt_uri="qemu:///system?socket=/nonexistent/libvirt-sock")
    err = io.StringIO()
    with redirect_stderr(err):
        rc = agent.main(["install", json.dumps(opts)])
    assert rc == constants.EXIT_REFUSED
    assert "refused: libvirt is not reachable at qemu:///system?socket=/nonexistent" \
        in err.getvalue()
    assert snapshot(str(target.tmp)) == snap


def test_layout_detection(target, tmp_path):
    t = target()
    assert t.layout == "embedded" and isinstance(t, target_mod.Embedded)
    assert isinstance(target(layout="embedded"), target_mod.Embedded)
    with pytest.raises(Refused, match="not a state directory"):
        find_target({"state_dir": str(tmp_path / "nothing"), "python": sys.executable})
    with pytest.raises(Refused, match="not a state directory"):
        find_target({"layout": "embedded", "state_dir": str(tmp_path / "nothing"),
                     "python": sys.executable})


@pytest.mark.parametrize("layout, units, compute_conf, cloud", [
    ("devstack", ["devstack@n-api", "devstack@n-cpu", "apache2"], "/etc/nova/nova-cpu.conf",
     "devstack-admin"),
    ("packages", ["nova-api", "nova-compute", "apache2"], "/etc/nova/nova-compute.conf",
     "admin"),
])
def test_systemd_layouts(monkeypatch, layout, units, compute_conf, cloud):
    """The DevStack and packages layouts (no such installation here: /etc/nova absent, the
    units faked): their files, restart through systemctl, the restart hook over it."""
    if os.path.exists("/etc/nova"):
        pytest.skip("this machine has an /etc/nova of its own")
    monkeypatch.setattr(target_mod, "_unit_exists", lambda name: name in (
        "apache2", "nova-api", "devstack@n-api", "devstack@n-cpu"))
    t = find_target({"layout": layout, "python": sys.executable})
    assert type(t) is target_mod.LAYOUTS[layout] and t.layout == layout
    assert (t.nova_conf, t.compute_conf, t.paste_ini, t.clouds_yaml, t.cloud) == (
        "/etc/nova/nova.conf", compute_conf, "/etc/nova/api-paste.ini",
        "/etc/openstack/clouds.yaml", cloud)
    assert t.restart_cmd(["nova-api", "nova-compute", "horizon"]) == \
        ["systemctl", "restart"] + units
    assert t.restart_cwd == "/" and t.horizon_units == ["apache2"]
    assert t.describe() == "%s layout (/etc/nova), python %s" % (layout, sys.executable)
    hooked = find_target({"layout": layout, "python": sys.executable, "restart_hook": "x"})
    assert hooked.restart_cmd(["nova-api"]) == ["sh", "-c", "x", "restart-hook", "nova-api"]


def test_embedded_restart(target):
    t = target()
    t._embedded = {"name": "b"}
    assert t.restart_cmd(["nova-api", "horizon"]) == [
        sys.executable, "-m", "stack", "restart", "--state-dir", t.state_dir, "--name", "b",
        "nova-api"]
    assert t.restart_cwd == ROOT
    hooked = target(restart_hook="x")
    assert hooked.restart_cmd(["horizon"]) == ["sh", "-c", "x", "restart-hook", "horizon"]
    assert hooked.restart_cwd == "/"


# --- the agent as one file (as fab ships it) -------------------------------------------------
def test_zipapp_runs_on_the_standard_library_alone(target, tmp_path):
    pyz = fabfile.build_agent(str(tmp_path))
    with zipfile.ZipFile(pyz) as z:
        names = z.namelist()
    sources = os.listdir(os.path.join(ROOT, "scripts", "install_agent"))
    assert sorted(names) == sorted(["__main__.py", "install_agent/"] + [
        "install_agent/" + n for n in sources if n.endswith(".py")])   # no __pycache__

    def run(cmd, opts):   # -I -S: no site-packages, no PYTHONPATH, not the checkout
        return subprocess.run([sys.executable, "-I", "-S", pyz, cmd, json.dumps(opts)],
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    r = run("probe", target.opts)
    assert r.returncode == constants.EXIT_OK, r.stderr
    assert json.loads(r.stdout)["layout"] == "embedded"
    r = run("uninstall", target.opts)
    assert r.returncode == constants.EXIT_OK, r.stderr
    assert r.stdout == "openstackpp: nothing to uninstall: no manifest at %s\n" % os.path.join(
        target.opts["backup_dir"], "manifest.json")
    nothing = str(tmp_path / "nothing")
    r = run("probe", {"state_dir": nothing})
    assert r.returncode == constants.EXIT_REFUSED
    assert r.stderr == "openstackpp: refused: %s is not a state directory of the embedded " \
        "stack (no settings.json)\n" % nothing
