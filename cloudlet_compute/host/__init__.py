"""The libvirt/QEMU host side: ``domains`` (libvirt calls), ``domxml`` (domain XML edits),
``instances`` (domains made from a base VM), ``nbd`` (writing into qcow2 images through
qemu-nbd) and ``qemuimg`` (``qemu-img`` wrappers). Only ``domains`` imports libvirt here
(``instances`` through it)."""
