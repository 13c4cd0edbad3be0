"""The nova side of the engine: CloudletDriver and its RPC endpoint.

The only package under ``cloudlet_compute`` that imports nova. Stock nova-compute loads
the driver with ``compute_driver = cloudlet.CloudletDriver``, through the one-line module
``nova/virt/cloudlet/__init__.py`` that :mod:`cloudlet_compute.nova.shim` installs.

Modules: ``driver`` (CloudletDriver, a thin LibvirtDriver subclass), ``rpc`` (the
``cloudlet`` RPC namespace served by nova-compute), ``basecache`` (base VMs cached on the
compute node, fetched from Glance), ``engine_adapter`` (the only caller of the engine),
``conf`` (the ``[cloudlet]`` options), ``exception``, ``shim``.
"""
