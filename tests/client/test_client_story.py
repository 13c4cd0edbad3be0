"""The cloudlet story on the embedded OpenStack, told only through the two clients.

``cloudlet-client``: import-base -> resume-base -> customize in the guest -> create-overlay
--wait -> download -> serve over HTTP -> synthesis --wait -> the synthesized guest's memory
and disk state equal the customized guest's; then export-base gives back the same base.
``openstack cloudlet``: base import/list/resume -> overlay create --wait/list/download.
"""

import json
import os
import uuid
import zipfile

from cloudlet_compute import imagemodel as model
from stack import story as storymod
from stack.httpserve import FileServer
from tests.client.conftest import as_json, cloudlet_client, openstack
from tests.compute.test_story import assert_same_guest
from tests.support import cloud


def customize(admin, server_id):
    with cloud.guest_channel(admin, server_id) as chan:
        chan.run(storymod.CUSTOMIZE.format(token=uuid.uuid4().hex), timeout=120)
        return storymod.parse_observation(chan.run(storymod.OBSERVE))


def test_story_with_cloudlet_client(clouds, base_package, created, workdir):
    demo, admin = clouds
    package, base_id = base_package
    work = workdir

    ids = as_json(cloudlet_client("--json", "import-base", package, created.name("base")))
    disk_id = ids["base-disk"]
    listing = as_json(cloudlet_client("--json", "list-base"))
    assert {"id": disk_id, "base_id": base_id, "min_ram": 256, "min_disk": 1}.items() \
        <= next(row for row in listing if row["id"] == disk_id).items()

    resumed = as_json(cloudlet_client("--json", "resume-base", created.name("base-disk"),
                                      created.name("resumed"), "--network", "none", "--wait"))
    assert resumed["status"] == "ACTIVE" and resumed["flavor"] == "cl.tiny"
    expected = customize(admin, resumed["id"])

    proc = cloudlet_client("--json", "create-overlay", resumed["id"], created.name("ov"),
                           "--wait")
    overlay = as_json(proc)
    # task_state progress while waiting (polled each second: a short state may be skipped)
    assert any(state in proc.stderr for state in
               ("image_snapshot_pending", "image_pending_upload", "image_uploading"))
    assert proc.stderr.rstrip().endswith("no task")
    assert overlay["size"] > 0
    assert overlay["overlay-id"] in {o["id"] for o in as_json(
        cloudlet_client("--json", "list-overlay"))}

    served = os.path.join(work, "overlay.zip")
    cloudlet_client("download", created.name("ov"), served)
    assert os.path.getsize(served) == overlay["size"]

    with FileServer(work) as server:
        synthesized = as_json(cloudlet_client(
            "--json", "synthesis", server.url("overlay.zip"), created.name("synth"),
            "--network", "none", "--wait"))
        # The client read only the overlay's tail (its meta) to find the base.
        assert server.requests[0] == ("GET", "bytes=-65536")
    assert synthesized["status"] == "ACTIVE" and synthesized["image"] == disk_id
    server = demo.compute.get_server(synthesized["id"])
    assert server.metadata[model.METADATA_OVERLAY_URL].endswith("/overlay.zip")
    with cloud.guest_channel(admin, synthesized["id"]) as chan:
        observed = storymod.parse_observation(chan.run(storymod.OBSERVE))
    assert_same_guest(expected, observed)

    exported = os.path.join(work, "exported.zip")
    out = as_json(cloudlet_client("--json", "export-base", disk_id, exported))
    assert out["base_id"] == base_id
    with zipfile.ZipFile(exported) as zf:
        assert json.loads(zf.read("manifest.json"))["id"] == base_id
    assert sorted(os.listdir(work)) == ["exported.zip", "overlay.zip"]


def test_story_with_openstack_cloudlet(clouds, base_package, created, workdir):
    demo, admin = clouds
    package, base_id = base_package
    work = workdir
    tag = created.name("osc")

    ids = as_json(openstack("cloudlet", "base", "import", package, tag, "-f", "json"))
    listing = as_json(openstack("cloudlet", "base", "list", "-f", "json"))
    assert any(r["ID"] == ids["base-disk"] and r["Base Id"] == base_id for r in listing)

    resumed = as_json(openstack("cloudlet", "base", "resume", ids["base-disk"], tag + "-vm",
                                "--network", "none", "--wait", "-f", "json"))
    assert resumed["status"] == "ACTIVE"
    expected = customize(admin, resumed["id"])

    overlay_id = openstack("cloudlet", "overlay", "create", resumed["id"], tag + "-ov",
                           "--wait", "-f", "value", "-c", "overlay-id").stdout.strip()
    assert demo.image.get_image(overlay_id).status == "active"
    values = openstack("cloudlet", "overlay", "list", "-f", "value", "-c", "ID").stdout
    assert overlay_id in values.split()

    path = os.path.join(work, "overlay.zip")
    openstack("cloudlet", "overlay", "download", overlay_id, path)
    assert os.path.getsize(path) == demo.image.get_image(overlay_id).size

    # Synthesis from the overlay image in Glance (no web server): nova-compute fetches it.
    synthesized = as_json(openstack("cloudlet", "synthesis", tag + "-synth", "--overlay-image",
                                    tag + "-ov", "--network", "none", "--wait", "-f", "json"))
    assert synthesized["status"] == "ACTIVE" and synthesized["image"] == ids["base-disk"]
    server = demo.compute.get_server(synthesized["id"])
    assert server.metadata[model.METADATA_OVERLAY_IMAGE] == overlay_id
    with cloud.guest_channel(admin, synthesized["id"]) as chan:
        assert_same_guest(expected, storymod.parse_observation(chan.run(storymod.OBSERVE)))


def test_ext_list_and_debug(stack_up):
    out = as_json(cloudlet_client("--json", "ext-list", "os-cloudlet"))
    assert out[0]["alias"] == "os-cloudlet"
    proc = cloudlet_client("--debug", "list-overlay")
    assert "REQ: curl -g -i -X GET" in proc.stderr       # the HTTP exchange
    assert "cloudlet-demo" not in proc.stderr.replace("--os-cloud cloudlet-demo", "")
