"""The compute node's base VM cache on a real base store, with a fake Glance: concurrent
first use fetches once, a failed fetch leaves nothing, LRU eviction under the quota spares
the bases that domains use, and the stats list what the host holds."""

import hashlib
import logging
import os
import subprocess
import threading
import time

import pytest

from cloudlet_compute import bases
from cloudlet_compute.host import domxml
from cloudlet_compute.nova import basecache
from cloudlet_compute.nova.exception import CloudletBaseUnavailable
from nova import exception
from bench import synthetic


class FakeGlance:
    """Base images by id; ``download`` sleeps ``delay`` first, counts, and fails when a
    failure is queued (after writing half the file, as a broken connection would)."""

    def __init__(self, delay=0.0):
        self.data, self.delay, self.failures = {}, delay, []
        self.downloads = []
        self._lock = threading.Lock()

    def get(self, context, image_id):
        if image_id not in self.data:
            raise exception.ImageNotFound(image_id=image_id)
        return {"id": image_id, "size": len(self.data[image_id])}

    def download(self, context, image_id, dest_path=None):
        time.sleep(self.delay)
        with self._lock:
            self.downloads.append(image_id)
            failure = self.failures.pop(0) if self.failures else None
        data = self.data[image_id]
        with open(dest_path, "wb") as f:
            f.write(data[:len(data) // 2] if failure else data)
        if failure:
            raise failure


class FakeDomain:
    def __init__(self, xml):
        self.xml = xml

    def XMLDesc(self, flags=0):
        return self.xml

    def name(self):
        return "dom"


class FakeConn:
    """A libvirt connection whose domains are XML strings."""

    def __init__(self):
        self.xmls = []

    def listAllDomains(self):
        return [FakeDomain(xml) for xml in self.xmls]


def publish(glance, seed):
    """Put the synthetic base of ``seed`` into ``glance``; return ``(base id, disk image id,
    memory image id)``."""
    base_pages, base_disk, _, _ = synthetic.world(seed)
    disk_id, memory_id = "disk-%d" % seed, "memory-%d" % seed
    glance.data[disk_id] = base_disk
    glance.data[memory_id] = synthetic.memory_image(base_pages)
    return hashlib.sha256(base_disk).hexdigest(), disk_id, memory_id


@pytest.fixture
def cache(tmp_path):
    glance, conn = FakeGlance(), FakeConn()
    cache = basecache.BaseCache(str(tmp_path / "cache"), lambda: conn, image_api=glance)
    cache.glance, cache.conn = glance, conn
    return cache


def cached_ids(cache):
    return {b.id for b in cache.store.list()}


def test_concurrent_first_use_fetches_once_and_all_get_the_whole_base(cache):
    cache.glance.delay = 0.3
    base_id, disk_id, memory_id = publish(cache.glance, 7)
    start, got, errors = threading.Barrier(4), [], []

    def spawn(holder):
        start.wait()
        try:
            got.append(cache.ensure(None, holder, base_id, disk_id, memory_id))
        except Exception as exc:   # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=spawn, args=("vm%d" % i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(cache.glance.downloads) == sorted([disk_id, memory_id])
    assert {b.path for b in got} == {os.path.join(cache.store.bases_dir, base_id)}
    with open(got[0].disk_path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == base_id
    assert bases.BaseVM(got[0].path).memory_sha256 == hashlib.sha256(
        cache.glance.data[memory_id]).hexdigest()
    assert sorted(cache._pins) == ["vm0", "vm1", "vm2", "vm3"]   # pinned until released
    for i in range(4):
        cache.release("vm%d" % i)
    assert cache._pins == {}


def test_failed_fetch_leaves_nothing_and_the_next_spawn_retries(cache):
    base_id, disk_id, memory_id = publish(cache.glance, 7)
    cache.glance.failures.append(ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(ConnectionResetError):
        cache.ensure(None, "vm0", base_id, disk_id, memory_id)
    assert cached_ids(cache) == set() and os.listdir(cache.store.tmp_dir) == []
    assert cache._pins == {}
    base = cache.ensure(None, "vm1", base_id, disk_id, memory_id)
    assert base.id == base_id and cache.glance.downloads == [disk_id, disk_id, memory_id]
    # An image Glance lost: one line naming it.
    with pytest.raises(CloudletBaseUnavailable, match="image memory-8 is gone"):
        cache.ensure(None, "vm2", "ef" * 32, "disk-7", "memory-8")


def _use(cache, holder, seed):
    base = cache.ensure(None, holder, *publish(cache.glance, seed))
    cache.release(holder)
    return base


def test_lru_eviction_under_the_quota_spares_bases_in_use(cache, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=basecache.__name__)
    a = _use(cache, "vm-a", 1)
    b = _use(cache, "vm-b", 2)
    size = max(a.footprint(), b.footprint())
    cache.max_bytes = int(2.5 * size)            # room for two bases, not three

    c = _use(cache, "vm-c", 3)   # a: least recently used, nothing uses it
    assert cached_ids(cache) == {b.id, c.id}
    assert "evicted base VM %s" % a.id in caplog.text

    # A guest hard-rebooted by nova (no cloudlet metadata) whose qcow2 backs onto b's disk.
    disk = str(tmp_path / "instance.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    b.disk_path, disk], check=True)
    cache.conn.xmls.append("<domain><name>i-1</name><devices><disk type='file' "
                           "device='disk'><source file='%s'/></disk></devices></domain>" % disk)
    a = _use(cache, "vm-a2", 1)   # b is the oldest but in use: c goes
    assert cached_ids(cache) == {a.id, b.id}

    # a pinned by a spawn, b used: nothing to evict, the cache stays over, the spawn goes on.
    cache.pin("vm-x", a.id)
    c = _use(cache, "vm-c2", 3)
    assert cached_ids(cache) == {a.id, b.id, c.id}
    assert "over its quota" in caplog.text
    cache.release("vm-x")

    # a restored into a domain (its metadata names it): c, the newest, is the only one left.
    cache.conn.xmls.append("<domain><name>i-2</name><metadata><cloudlet:instance "
                           "xmlns:cloudlet='%s' base='%s'/></metadata></domain>"
                           % (domxml.NS, a.id))
    d = _use(cache, "vm-d", 4)
    assert cached_ids(cache) == {a.id, b.id, d.id}

    stats = cache.stats()
    assert stats[basecache.STAT_BASES].split(",") == [d.id, a.id, b.id]   # newest first
    assert stats[basecache.STAT_IMAGES].split(",") == ["disk-4", "disk-1", "disk-2"]


def test_precache_fetches_the_whole_base_once_and_pins_it_only_meanwhile(cache, caplog):
    caplog.set_level(logging.INFO, logger=basecache.__name__)
    base_id, disk_id, memory_id = publish(cache.glance, 5)
    assert cache.precache(None, base_id, disk_id, memory_id) is True
    assert cache.glance.downloads == [disk_id, memory_id] and cache._pins == {}
    base = bases.BaseVM(os.path.join(cache.store.bases_dir, base_id))
    for path in (base.disk_path, base.memory_path, base.disk_digests_path,
                 os.path.join(base.path, "memory.pages")):
        assert os.path.getsize(path) > 0, path
    assert cache.stats() == {basecache.STAT_BASES: base_id, basecache.STAT_IMAGES: disk_id}
    assert "pre-cache of base VM %s (image %s): fetched" % (base_id, disk_id) in caplog.text

    assert cache.precache(None, base_id, disk_id, memory_id) is False   # no second fetch
    assert cache.glance.downloads == [disk_id, memory_id]
    assert "already cached" in caplog.text

    other_id, other_disk, _memory = publish(cache.glance, 6)
    with pytest.raises(CloudletBaseUnavailable, match="image memory-gone is gone"):
        cache.precache(None, other_id, other_disk, "memory-gone")
    assert cached_ids(cache) == {base_id} and cache._pins == {}
