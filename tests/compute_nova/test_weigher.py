"""CachedBaseWeigher through nova's own weight handler, with nova's HostState and
RequestSpec objects: hosts caching the request's base win, others stay candidates."""

import uuid

import pytest

import nova.conf
from nova import objects
from nova.scheduler import host_manager
from nova.scheduler import weights

from cloudlet_compute.nova import basecache
from cloudlet_compute.nova import weigher

BASE = "ab" * 32
IMAGE = str(uuid.uuid4())


def host(name, bases=(), images=(), aggregate_meta=None):
    state = host_manager.HostState(name, name, uuid.uuid4())
    state.stats = {basecache.STAT_BASES: ",".join(bases),
                   basecache.STAT_IMAGES: ",".join(images)} if bases else {}
    state.aggregates = [objects.Aggregate(metadata=aggregate_meta)] if aggregate_meta else []
    return state


def spec(image_id=IMAGE, hint=None):
    return objects.RequestSpec(image=objects.ImageMeta(id=image_id),
                               scheduler_hints={weigher.HINT: [hint]} if hint else {})


def weigh(hosts, request):
    weighed = weights.HostWeightHandler().get_weighed_objects(
        [weigher.CachedBaseWeigher()], hosts, request)
    return [(w.obj.host, w.weight) for w in weighed]


@pytest.fixture
def multiplier():
    conf = nova.conf.CONF
    conf.set_override("base_cache_weight_multiplier", 3.0, group="cloudlet")
    yield 3.0
    conf.clear_override("base_cache_weight_multiplier", group="cloudlet")


def test_host_that_fetched_the_base_through_the_image_wins(multiplier):
    hosts = [host("cold"), host("warm", [BASE, "cd" * 32], ["other", IMAGE]), host("other",
             ["cd" * 32], ["other"])]
    assert weigh(hosts, spec()) == [("warm", 3.0), ("cold", 0.0), ("other", 0.0)]


def test_hint_names_the_base_for_images_no_host_fetched(multiplier):
    hosts = [host("cold"), host("warm", [BASE], ["another-image-of-it"])]
    assert weigh(hosts, spec(hint=BASE))[0] == ("warm", 3.0)


def test_no_host_holds_it_every_host_stays_a_candidate(multiplier):
    hosts = [host("a", ["cd" * 32], ["other"]), host("b")]
    assert sorted(weigh(hosts, spec(hint=BASE))) == [("a", 0.0), ("b", 0.0)]


def test_aggregate_metadata_overrides_the_multiplier(multiplier):
    hosts = [host("warm", [BASE], [IMAGE],
                  aggregate_meta={"cloudlet_base_weight_multiplier": "0.5"}), host("cold")]
    assert weigh(hosts, spec()) == [("warm", 0.5), ("cold", 0.0)]
