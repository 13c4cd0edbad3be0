"""The write side: a running VM -> its VM overlay, in data-flow order.

``capture`` (memory image and disk of the running domain) -> ``delta`` (what it has that its
base lacks) -> ``dedup`` (where each changed chunk's bytes already exist) -> ``pack`` (records,
blobs, the package); ``overlay.create`` runs the four.
"""
