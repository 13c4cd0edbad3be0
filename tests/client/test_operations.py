"""``client.core`` without a cloud: flavor choice and error translation."""

import types

import keystoneauth1.exceptions as ks_exc
import openstack.exceptions as sdk_exc
import pytest

from client.core import errors, lookups
from cloudlet_compute.errors import ConflictError, NotFoundError


def flavor(name, ram, disk, vcpus=1):
    return types.SimpleNamespace(name=name, ram=ram, disk=disk, vcpus=vcpus, id=name)


class FakeCompute:
    def __init__(self, flavors):
        self._flavors = flavors

    def flavors(self):
        return list(self._flavors)

    def find_flavor(self, ref, ignore_missing=True):
        return next((f for f in self._flavors if f.name == ref), None)


def conn_with(*flavors):
    return types.SimpleNamespace(compute=FakeCompute(flavors))


IMAGE = types.SimpleNamespace(id="img", min_ram=256, min_disk=1)


def test_pick_flavor_takes_the_smallest_that_fits():
    conn = conn_with(flavor("big", 2048, 20), flavor("small", 512, 2), flavor("tiny", 256, 1),
                     flavor("too-small", 128, 1), flavor("zero-disk", 256, 0))
    assert lookups.pick_flavor(conn, IMAGE).name == "tiny"
    assert lookups.pick_flavor(conn, IMAGE, "big").name == "big"


def test_pick_flavor_errors():
    with pytest.raises(NotFoundError, match="no flavor has ram >= 256 MiB and disk >= 1 GiB"):
        lookups.pick_flavor(conn_with(flavor("too-small", 128, 1)), IMAGE)
    with pytest.raises(NotFoundError, match="no flavor 'nope'"):
        lookups.pick_flavor(conn_with(), IMAGE, "nope")


def test_translate():
    assert isinstance(errors.translate(ks_exc.Unauthorized("nope")), errors.AuthError)
    assert isinstance(errors.translate(sdk_exc.ConfigException("no cloud")), errors.AuthError)
    assert isinstance(errors.translate(sdk_exc.ConflictException("busy")), ConflictError)
    assert isinstance(errors.translate(sdk_exc.NotFoundException("gone")), NotFoundError)
    assert errors.translate(ValueError("x")) is None


def test_synthesis_needs_one_overlay_source():
    from client.core import synthesis
    from client.core.errors import UsageError
    for url, image in ((None, None), ("http://h/o.zip", "app")):
        with pytest.raises(UsageError, match="overlay URL or --overlay-image"):
            synthesis.synthesis(None, url, "vm", overlay_image=image)


class FailedTaskCompute:
    """A server whose cloudlet task is over, its image record deleted; ``reason`` (or None)
    is what nova-compute left in its metadata."""

    def __init__(self, reason):
        self.reason = reason

    def get_server(self, server_id):
        return types.SimpleNamespace(name="web", task_state=None)

    def get(self, url, raise_exc=True):
        assert url == "/servers/s1/metadata/cloudlet_error", url
        if self.reason is None:
            return types.SimpleNamespace(status_code=404, json=lambda: {})
        return types.SimpleNamespace(status_code=200,
                                     json=lambda: {"meta": {"cloudlet_error": self.reason}})


@pytest.mark.parametrize("reason, said", [
    ("Cloudlet cloudlet-overlay-finish failed: No space left\non device",
     "the task on server web failed: Cloudlet cloudlet-overlay-finish failed: No space left "
     "on device"),
    (None, "the task on server web failed: image ov1 is deleted")])
def test_a_failed_task_says_why(reason, said):
    from client.core import waiting
    conn = types.SimpleNamespace(compute=FailedTaskCompute(reason), image=types.SimpleNamespace(
        find_image=lambda image_id, ignore_missing=True: None))
    with pytest.raises(errors.ApiError) as err:
        waiting.wait_task(conn, "s1", ["ov1"], report=lambda text: None)
    assert str(err.value) == said
