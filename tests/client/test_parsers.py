"""Argument parsing of both entry points: ``cloudlet-client`` and ``openstack cloudlet``."""

import importlib.metadata
import re

import pytest
from osc_lib.test import base

from client import cloudlet_client
from client.osc import base as osc_base, overlay as osc_overlay, plugin
from client.osc import handoff as osc_handoff, synthesis as osc_synthesis


def parse(*argv):
    return cloudlet_client.build_parser().parse_args(list(argv))


@pytest.mark.parametrize("argv, expected", [
    (["import-base", "b.zip", "ubuntu"],
     {"func": cloudlet_client.cmd_import_base, "package": "b.zip", "name": "ubuntu",
      "public": False}),
    (["export-base", "ubuntu-disk", "b.zip"],
     {"func": cloudlet_client.cmd_export_base, "base_image": "ubuntu-disk", "package": "b.zip"}),
    (["list-base"], {"func": cloudlet_client.cmd_list_base}),
    (["resume-base", "ubuntu-disk", "vm1"],
     {"func": cloudlet_client.cmd_resume_base, "base_image": "ubuntu-disk", "name": "vm1",
      "flavor": None, "network": "auto", "wait": False, "timeout": 600}),
    (["resume-base", "ubuntu-disk", "vm1", "--flavor", "m1.small", "--network", "none",
      "--wait", "--timeout", "30"],
     {"flavor": "m1.small", "network": "none", "wait": True, "timeout": 30}),
    (["create-base", "srv", "new-base", "--wait"],
     {"func": cloudlet_client.cmd_create_base, "server": "srv", "name": "new-base",
      "wait": True}),
    (["cache-base", "ubuntu-disk", "--aggregate", "edge"],
     {"func": cloudlet_client.cmd_cache_base, "base_image": "ubuntu-disk",
      "aggregate": "edge"}),
    (["list-base-hosts"], {"func": cloudlet_client.cmd_list_base_hosts}),
    (["create-overlay", "srv", "app"],
     {"func": cloudlet_client.cmd_create_overlay, "server": "srv", "name": "app",
      "wait": False}),
    (["list-overlay"], {"func": cloudlet_client.cmd_list_overlay}),
    (["download", "app", "app.zip"],
     {"func": cloudlet_client.cmd_download, "overlay_image": "app", "file": "app.zip"}),
    (["synthesis", "http://h/o.zip", "vm2", "--flavor", "f", "--wait"],
     {"func": cloudlet_client.cmd_synthesis, "overlay_url": "http://h/o.zip", "name": "vm2",
      "flavor": "f", "network": "auto", "wait": True, "overlay_image": None}),
    (["synthesis", "vm3", "--overlay-image", "app"],
     {"func": cloudlet_client.cmd_synthesis, "overlay_url": None, "name": "vm3",
      "overlay_image": "app"}),
    (["handoff", "srv", "--dest-cloud", "other"],
     {"func": cloudlet_client.cmd_handoff, "server": "srv", "dest_cloud": "other",
      "dest_auth_url": None, "residue": None, "dest_vmname": None, "wait": False,
      "timeout": 600}),
    (["handoff", "srv", "--dest-auth-url", "http://d:5000/v3", "--dest-username", "u",
      "--dest-password", "p", "--dest-project", "pr", "--dest-project-domain", "pd",
      "--dest-user-domain", "ud", "--dest-vmname", "moved", "--wait"],
     {"dest_cloud": None, "dest_auth_url": "http://d:5000/v3", "dest_username": "u",
      "dest_password": "p", "dest_project": "pr", "dest_project_domain": "pd",
      "dest_user_domain": "ud", "dest_vmname": "moved", "wait": True}),
    (["handoff", "srv", "--residue", "srv-residue", "--wait"],
     {"residue": "srv-residue", "dest_cloud": None, "wait": True}),
    (["ext-list"], {"func": cloudlet_client.cmd_ext_list, "name": None}),
    (["ext-list", "os-cloudlet"], {"name": "os-cloudlet"}),
    (["--os-cloud", "c1", "--debug", "--json", "list-base"],
     {"os_cloud": "c1", "debug": True, "json": True}),
])
def test_cloudlet_client_parser(argv, expected):
    args = parse(*argv)
    for key, value in expected.items():
        assert getattr(args, key) == value, key


def test_os_cloud_defaults_to_env(monkeypatch):
    monkeypatch.setenv("OS_CLOUD", "from-env")
    assert parse("list-base").os_cloud == "from-env"


@pytest.mark.parametrize("argv", [[], ["resume-base", "only-one"], ["download", "x"],
                                  ["cache-base", "ubuntu-disk"],
                                  ["synthesis"], ["nonsense"], ["handoff", "srv"],
                                  ["handoff", "srv", "other-cloud"],
                                  ["handoff", "srv", "--dest-cloud", "c", "--residue", "r"],
                                  ["handoff", "srv", "--dest-cloud", "c",
                                   "--dest-auth-url", "http://d/v3"],
                                  ["resume-base", "b", "n", "--timeout", "x"]])
def test_cloudlet_client_rejects(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert re.search(r"^cloudlet-client( [a-z-]+)?: error: ", capsys.readouterr().err, re.M)


class TestOscParsers(base.TestCommand):

    def _cmd(self, cls):
        return cls(self.app, None)

    def test_base_import(self):
        args = self.check_parser(self._cmd(osc_base.ImportBase), ["b.zip", "ub", "--public"],
                                 [("package", "b.zip"), ("name", "ub"), ("public", True)])
        self.assertIsNotNone(args)

    def test_base_export(self):
        self.check_parser(self._cmd(osc_base.ExportBase), ["ub-disk", "b.zip"],
                          [("base", "ub-disk"), ("package", "b.zip")])

    def test_base_list(self):
        self.check_parser(self._cmd(osc_base.ListBase), [], [])

    def test_base_create(self):
        self.check_parser(self._cmd(osc_base.CreateBase), ["srv", "nb", "--wait"],
                          [("server", "srv"), ("name", "nb"), ("wait", True)])

    def test_base_resume(self):
        self.check_parser(self._cmd(osc_base.ResumeBase),
                          ["ub-disk", "vm", "--flavor", "f", "--network", "none"],
                          [("base", "ub-disk"), ("name", "vm"), ("flavor", "f"),
                           ("network", "none"), ("wait", False), ("timeout", 600)])

    def test_base_cache(self):
        self.check_parser(self._cmd(osc_base.CacheBase), ["ub-disk", "--aggregate", "edge"],
                          [("base", "ub-disk"), ("aggregate", "edge")])
        self.assertRaises(base.ParserException, self.check_parser,
                          self._cmd(osc_base.CacheBase), ["ub-disk"], [])

    def test_base_hosts(self):
        self.check_parser(self._cmd(osc_base.ListBaseHosts), [], [])

    def test_overlay_create(self):
        self.check_parser(self._cmd(osc_overlay.CreateOverlay),
                          ["srv", "app", "--wait", "--timeout", "60"],
                          [("server", "srv"), ("name", "app"), ("wait", True),
                           ("timeout", 60)])

    def test_overlay_list(self):
        self.check_parser(self._cmd(osc_overlay.ListOverlay), [], [])

    def test_overlay_download(self):
        self.check_parser(self._cmd(osc_overlay.DownloadOverlay), ["app", "app.zip"],
                          [("overlay", "app"), ("file", "app.zip")])

    def test_synthesis(self):
        self.check_parser(self._cmd(osc_synthesis.SynthesizeServer),
                          ["http://h/o.zip", "vm", "--wait"],
                          [("overlay_url", "http://h/o.zip"), ("name", "vm"),
                           ("network", "auto"), ("flavor", None), ("wait", True)])
        self.check_parser(self._cmd(osc_synthesis.SynthesizeServer),
                          ["vm", "--overlay-image", "app"],
                          [("overlay_url", None), ("name", "vm"), ("overlay_image", "app")])

    def test_handoff(self):
        self.check_parser(self._cmd(osc_handoff.HandoffServer),
                          ["srv", "--dest-auth-url", "http://d:5000/v3", "--dest-username",
                           "u", "--dest-password", "p", "--dest-project", "pr", "--wait"],
                          [("server", "srv"), ("dest_auth_url", "http://d:5000/v3"),
                           ("dest_username", "u"), ("dest_password", "p"),
                           ("dest_project", "pr"), ("dest_cloud", None), ("residue", None),
                           ("dest_vmname", None), ("wait", True), ("timeout", 600)])

    def test_missing_positional(self):
        self.assertRaises(base.ParserException, self.check_parser,
                          self._cmd(osc_base.ResumeBase), ["only-base"], [])


def test_osc_entry_points():
    eps = importlib.metadata.entry_points()
    assert [e.value for e in eps.select(group="openstack.cli.extension", name="cloudlet")] \
        == ["client.osc.plugin"]
    commands = {e.name: e.load() for e in eps.select(group="openstack.cloudlet.v1")}
    assert commands == {
        "cloudlet_base_import": osc_base.ImportBase,
        "cloudlet_base_export": osc_base.ExportBase,
        "cloudlet_base_list": osc_base.ListBase,
        "cloudlet_base_create": osc_base.CreateBase,
        "cloudlet_base_resume": osc_base.ResumeBase,
        "cloudlet_base_cache": osc_base.CacheBase,
        "cloudlet_base_hosts": osc_base.ListBaseHosts,
        "cloudlet_overlay_create": osc_overlay.CreateOverlay,
        "cloudlet_overlay_list": osc_overlay.ListOverlay,
        "cloudlet_overlay_download": osc_overlay.DownloadOverlay,
        "cloudlet_synthesis": osc_synthesis.SynthesizeServer,
        "cloudlet_handoff": osc_handoff.HandoffServer,
    }
    for cls in commands.values():   # the docstring is the help text
        assert cls.__doc__ and cls.__doc__[0].isupper()
    assert plugin.API_NAME == "cloudlet" and "1" in plugin.API_VERSIONS
    scripts = eps.select(group="console_scripts", name="cloudlet-client")
    assert [e.value for e in scripts] == ["client.cloudlet_client:main"]
