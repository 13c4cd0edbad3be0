"""Fixtures of the client tests: the embedded stack, a base package, the two commands."""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.conftest import scratch_root
from tests.support import cloud

BIN = os.path.dirname(sys.executable)
CLOUD = "cloudlet-demo"


def client_argv(*args):
    """The argv of ``cloudlet-client --os-cloud cloudlet-demo ARGS``."""
    return [os.path.join(BIN, "cloudlet-client"), "--os-cloud", CLOUD] + [str(a) for a in args]


def cloudlet_client(*args, check=True, timeout=600, env=None):
    """Run ``cloudlet-client --os-cloud cloudlet-demo ARGS``; return the CompletedProcess."""
    return _run(client_argv(*args), check, timeout, env)


def openstack(*args, check=True, timeout=600, env=None, os_cloud=CLOUD):
    """Run ``openstack --os-cloud cloudlet-demo ARGS`` (or as ``os_cloud``); return the
    CompletedProcess."""
    return _run([os.path.join(BIN, "openstack"), "--os-cloud", os_cloud]
                + [str(a) for a in args], check, timeout, env)


def _run(argv, check, timeout, env):
    proc = subprocess.run(argv, capture_output=True, text=True, env=env or cloud.env(),
                          timeout=timeout)
    if check and proc.returncode:
        raise AssertionError("%s -> %d\n%s" % (" ".join(argv), proc.returncode, proc.stderr))
    return proc


def as_json(proc):
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def base_package(base_story):
    """``(path, base id)`` of the session's base package (see tests/conftest.py)."""
    return base_story.package, base_story.base_id


class Created:
    """Names this test run uses (unique tag) and cleanup of whatever carries them."""

    def __init__(self, demo):
        self.demo = demo
        self.tag = "cli-%s" % uuid.uuid4().hex[:6]

    def name(self, role):
        return "%s-%s" % (self.tag, role)

    def servers(self):
        return [s for s in self.demo.compute.servers() if s.name.startswith(self.tag)]

    def images(self):
        return [i for i in self.demo.image.images() if i.name and i.name.startswith(self.tag)]

    def cleanup(self):
        for server in self.servers():
            cloud.delete_server(self.demo, server.id)
        for image in self.images():
            self.demo.image.delete_image(image.id, ignore_missing=True)


@pytest.fixture
def created(clouds):
    """This test's name tag; everything named with it is deleted afterwards."""
    run = Created(clouds[0])
    try:
        yield run
    finally:
        run.cleanup()


@pytest.fixture
def workdir():
    """A scratch directory under ``.state/tmp``, removed afterwards."""
    path = scratch_root("client-work")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
