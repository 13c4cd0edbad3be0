"""VM handoff from nova-compute: make the destination server, send the guest to it.

The destination server gets the listener's address and one-time secret in its metadata.
On failure the guest runs here as before and the destination server, if one was made, is
deleted; the error is a ``CloudletError`` for the driver to record.
"""

from cloudlet_compute.errors import CloudletError
from cloudlet_compute.nova import destination
from cloudlet_compute.nova import engine_adapter
from cloudlet_compute.nova import glance
from cloudlet_compute.progress import percent_steps


def hand_off(conn, store, guest_name, instance_uuid, target, progress, opts):
    """Hand domain ``guest_name`` off to a new server of the destination cloud; return the
    destination server's id.

    ``target``: ``(handoff_url, dest_token, dest_vmname, dest_image_id, dest_flavor_id)``;
    ``progress(percent)``; ``opts``: the ``[cloudlet]`` options (handoff_host,
    handoff_wait, handoff_compression).
    """
    handoff_url, dest_token, dest_vmname, dest_image_id, dest_flavor_id = target
    dest = destination.Destination(handoff_url, dest_token)
    dest_id = None

    def check_destination():
        server = dest.server(dest_id)
        if server is None or server.get('status') == 'ERROR':
            fault = ((server or {}).get('fault') or {}).get('message') or 'deleted'
            raise CloudletError("the destination server %s failed: %s" % (dest_id, fault))

    listener = engine_adapter.handoff_listener(opts.handoff_host)
    try:
        dest_id = dest.create_server(dest_vmname, dest_image_id, dest_flavor_id, {
            glance.METADATA_HANDOFF_SOURCE: listener.url,
            glance.METADATA_HANDOFF_SECRET: listener.secret_text,
            glance.METADATA_HANDOFF_FROM: instance_uuid})
        engine_adapter.handoff_send(conn, store, guest_name, listener, dest_id,
                                    opts.handoff_wait, check_destination,
                                    percent_steps(progress), opts.handoff_compression)
    except Exception as exc:
        listener.close()
        if dest_id:
            dest.delete_server(dest_id)
        if isinstance(exc, destination.DestinationError):
            raise CloudletError(str(exc)) from exc
        raise
    return dest_id
