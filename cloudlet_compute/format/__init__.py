"""The byte formats, one module per layer, innermost first.

``saveimage`` (libvirt save image header) and ``migstream`` (the QEMU migration stream in
it) are what QEMU and libvirt write; ``skeleton`` (a memory image with its page payloads cut
out), ``records`` (the plaintext inside a blob), ``blobcodec`` (a blob's compression),
``meta`` (the overlay meta) and ``package`` (the zip that holds them) are the VM overlay
(``doc/overlay-format.md``). Nothing here imports libvirt.
"""
