"""``python -m stack.guest.debian``: build the Debian guest unless cached; print its directory."""

from stack.guest.debian import ensure_built

print(ensure_built())
