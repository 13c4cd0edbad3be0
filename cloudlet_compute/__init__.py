"""OpenStack++ overlay engine and Nova compute driver.

Glossary
--------
base VM
    A disk image (raw) plus a memory image (a libvirt save image) of a plain guest,
    cached on every cloudlet and named by its *base id*: the SHA-256 of the disk content.
chunk
    The unit of comparison: one 4 KiB guest memory page or one 4 KiB disk block.
memory image
    A libvirt save image: libvirt header + domain XML + QEMU migration stream
    (see :mod:`cloudlet_compute.format.saveimage` and
    :mod:`cloudlet_compute.format.migstream`).
skeleton
    A memory image with the payload of every RAM page record cut out, plus the list of
    the places (*slots*) where the payloads go back.
record
    One chunk of an overlay: where it goes (memory slot or disk chunk) and where its bytes
    come from (literal, zeros, the base memory, the base disk, or an earlier record).
blob
    A compressed run of records; the unit of fetching and decompression.
VM overlay
    A zip package of the overlay meta, the skeleton and the blobs: everything that a
    customized VM has that its base VM lacks (``doc/overlay-format.md``).
VM synthesis
    Base VM + VM overlay -> the customized VM, running, memory intact.

Layout, in the order the bytes flow: ``format`` (one module per layer: ``saveimage``,
``migstream``, ``skeleton``, ``records``, ``blobcodec``, ``meta``, ``package``), ``write``
(``capture`` -> ``delta`` -> ``dedup`` -> ``pack``, run by ``overlay.create``; ``canonical``,
``spool`` and ``digestindex`` keep it in bounded memory), ``read`` (``fetch`` -> ``apply``,
run by ``synthesis``, which also decompresses and restores; ``fetchpolicy``; ``overlayinfo``
reads the meta alone, without libvirt), ``handoff`` (``source`` and ``destination``, sharing
``protocol``, over the ``wire``; ``adaptive`` compression), ``host`` (libvirt and QEMU:
``domains``, ``domxml``, ``instances``, ``nbd``, ``qemuimg``); at the top the base VM store
(``bases``, ``pagefile``), the Glance model (``imagemodel``), ``errors``, ``progress`` and the
``cloudlet`` CLI (``cli``). Nothing outside ``cloudlet_compute.nova`` imports nova.
"""

__version__ = "0.1.0"
