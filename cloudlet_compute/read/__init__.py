"""The read side: a VM overlay -> the customized VM, running, in data-flow order.

``fetch`` (a path or an http(s) URL, by range) -> ``apply`` (records -> memory image and disk,
verified) -> ``synthesis`` (the whole VM synthesis, restore included). ``overlayinfo`` reads
an overlay's meta only and imports nothing that imports libvirt (the clients use it).
"""
