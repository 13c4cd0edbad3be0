"""Finding things by what the user typed: servers, cloudlet images, base VM images, flavors,
host aggregates, networks, API extensions."""

import logging

from client.core.errors import api_errors, check_response
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import ConflictError, NotFoundError

LOG = logging.getLogger(__name__)
# ``--network`` values that are not a network name or id (nova's own keywords).
NETWORK_KEYWORDS = ("auto", "none")


def _find(find, ref, what):
    """``find(ref)`` (an SDK ``find_*``), or NotFoundError ``no WHAT 'REF'``."""
    with api_errors():
        found = find(ref, ignore_missing=True)
    if found is None:
        raise NotFoundError("no %s %r" % (what, ref))
    return found


def find_server(conn, ref):
    """The server named or identified by ``ref``."""
    return _find(conn.compute.find_server, ref, "server")


def images_of_type(conn, image_type, base_id=None, **query):
    """The images of ``cloudlet_type`` ``image_type`` (and base id ``base_id``, if given);
    ``query`` goes to Glance (e.g. ``owner``)."""
    # NOTE: openstacksdk drops query parameters it does not know, so Glance cannot filter
    # on our properties; the filtering happens here.
    with api_errors():
        images = list(conn.image.images(**query))
    return [i for i in images if of_type(i, image_type, base_id)]


def of_type(image, image_type, base_id=None):
    """Whether ``image`` has ``cloudlet_type`` ``image_type`` (and base id ``base_id``, if
    given)."""
    props = image.properties or {}
    return props.get(model.PROPERTY_TYPE) == image_type and (
        base_id is None or props.get(model.PROPERTY_BASE_ID) == base_id)


def first_active(images):
    """The first of ``images`` that is active, or None."""
    return next((i for i in images if i.status == "active"), None)


def base_images(conn, base_id):
    """The base disk images of base VM ``base_id``, whatever their status."""
    return images_of_type(conn, model.BASE_DISK, base_id)


def active_base_image(conn, base_id):
    """The (first) active base disk image of base VM ``base_id``, or None."""
    return first_active(base_images(conn, base_id))


def find_image(conn, ref, image_type):
    """The image of ``cloudlet_type`` ``image_type`` whose id or name is ``ref``; for a base
    disk, ``ref`` may also be the base id (``base_sha256_uuid``)."""
    images = images_of_type(conn, image_type)
    for key in ("id", "name"):
        matches = [i for i in images if getattr(i, key) == ref]
        if len(matches) > 1:
            raise ConflictError("%d images are named %r; use the image id" % (len(matches), ref))
        if matches:
            return matches[0]
    if image_type == model.BASE_DISK:
        image = active_base_image(conn, ref)
        if image is not None:
            return image
    what = "base VM" if image_type == model.BASE_DISK else "VM overlay"
    raise NotFoundError("no %s image %r" % (what, ref))


def pick_flavor(conn, image, flavor=None):
    """The flavor to boot base disk ``image`` with: ``flavor`` if given, else the smallest
    flavor with ``ram >= min_ram`` and ``disk >= min_disk`` (the original matched exactly)."""
    if flavor:
        return _find(conn.compute.find_flavor, flavor, "flavor")
    with api_errors():
        flavors = list(conn.compute.flavors())
    min_ram, min_disk = image.min_ram or 0, image.min_disk or 0
    if not min_ram:
        LOG.warning("image %s has no min_ram; the smallest flavor may not match its memory",
                    image.id)
    # NOTE: disk 0 means "as large as the image" and is refused to non-admins for image
    # boots, so it never fits.
    fits = [f for f in flavors if f.ram >= min_ram and f.disk and f.disk >= min_disk]
    if not fits:
        raise NotFoundError("no flavor has ram >= %d MiB and disk >= %d GiB for image %s; "
                            "pass --flavor" % (min_ram, min_disk, image.id))
    return min(fits, key=lambda f: (f.ram, f.disk, f.vcpus, f.name))


def find_aggregate(conn, ref):
    """The host aggregate named or identified by ``ref`` (listing them takes an admin)."""
    return _find(conn.compute.find_aggregate, ref, "aggregate")


def networks_arg(conn, network):
    """The ``networks`` of ``POST /servers`` for ``network`` (name, id or a keyword)."""
    if network in NETWORK_KEYWORDS:
        return network
    return [{"uuid": _find(conn.network.find_network, network, "network").id}]


def list_extensions(conn, name=None):
    """Nova's API extensions (``GET /extensions``), or the one whose alias is ``name``."""
    with api_errors():
        resp = conn.compute.get("/extensions" + ("/%s" % name if name else ""),
                                raise_exc=False)
    body = check_response(resp).json()
    items = [body["extension"]] if name else body["extensions"]
    return [{"alias": e.get("alias"), "name": e.get("name"),
             "description": e.get("description"), "updated": e.get("updated")}
            for e in items]
