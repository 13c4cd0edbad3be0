"""The install agent of ``fab install`` / ``fab uninstall`` (fabfile.py; doc/install.md).

Standard library only: fabfile.py ships this package to the target as one zipapp file and runs
it there with the target's python3 (``python3 agent.pyz install '<json options>'``). It is not
part of the installed package. Modules, in the order they build on each other: ``constants``
(what OpenStack++ needs), ``report`` (messages and the two ways to stop), ``ini``
(line-preserving INI edits), ``target`` (what is on this machine), ``checks`` (the API and the
refusals), ``plan`` (plan, apply, manifest, uninstall), ``agent`` (restart, verify, commands).
"""
