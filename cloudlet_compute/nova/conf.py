"""The ``[cloudlet]`` options of nova-compute (read by CloudletDriver)."""

from oslo_config import cfg

cloudlet_group = cfg.OptGroup(
    'cloudlet',
    title='Cloudlet options',
    help="""
Options of the OpenStack++ cloudlet driver (``compute_driver = cloudlet.CloudletDriver``):
where base VMs are cached on the compute node and which overlay URLs it may fetch.
""")

cloudlet_opts = [
    cfg.StrOpt('cache_dir',
               default='$state_path/cloudlet',
               help="""
Directory of the compute node's base VM cache and scratch space.

A base VM (disk, memory image and their chunk hashes) is fetched from Glance once per
base id, verified against its ``base_sha256_uuid`` and kept here; overlays are built and
downloaded in its ``tmp/`` subdirectory. QEMU (user libvirt-qemu) must be able to
traverse it.

Possible values:

* An absolute path

Related options:

* ``[DEFAULT] state_path``: the default is below it
* ``[DEFAULT] instances_path``: instance disks stay there, as for stock libvirt
"""),
    cfg.IntOpt('base_cache_max_gb',
               default=0,
               min=0,
               help="""
Quota of the base VM cache (``cache_dir``), in GiB; 0 for none.

Before a base is fetched from Glance, and again once it is registered, the least
recently used bases are removed until the cache fits. A base that a domain on this host
uses (running or only defined) or that a spawn is using is never removed; if only such
bases are left, the cache stays over its quota (logged as a warning). Every removal is
logged at INFO. nova's own copy of the base disk image in ``$instances_path/_base`` is
nova's image cache and follows its options.

Possible values:

* 0 (default): no quota
* A number of GiB

Related options:

* ``cache_dir``
* ``[image_cache] remove_unused_original_minimum_age_seconds``: nova's disk image cache
"""),
    cfg.FloatOpt('base_cache_weight_multiplier',
                 default=10.0,
                 help="""
Multiplier of the scheduler's ``CachedBaseWeigher`` (nova-scheduler reads it).

The weigher gives 1 to a host whose cache holds the base VM a server resumes or
synthesizes (named by the server's image, or by the ``cloudlet_base`` scheduler hint),
else 0; nova normalizes every weigher's values across the hosts and adds them, each
times its multiplier. The default outweighs the RAM, CPU and disk weighers (1.0 each):
a host with the base wins when the filters leave it. An aggregate's
``cloudlet_base_weight_multiplier`` metadata overrides this value for its hosts.

Possible values:

* A positive number: prefer hosts that hold the base
* 0: ignore the cache

Related options:

* ``[filter_scheduler] weight_classes``: must list
  ``cloudlet_compute.nova.weigher.CachedBaseWeigher``
"""),
    cfg.StrOpt('handoff_host',
               default='$my_ip',
               help="""
Address this compute node listens on, one ephemeral port per VM handoff, for the
destination compute node to fetch the VM from.

The port is open only during one handoff and accepts only the destination server that
the handoff created, authenticated with a one-time secret; the transfer is encrypted.

Possible values:

* An IP address of this host that the destination's compute nodes can reach

Related options:

* ``handoff_wait``
"""),
    cfg.IntOpt('handoff_wait',
               default=600,
               min=10,
               help="""
Seconds a handoff source waits for the destination server to connect (the destination
may first have to fetch the base VM from its Glance), and then for it to report the VM
running.

Possible values:

* A number of seconds, at least 10

Related options:

* ``handoff_host``
"""),
    cfg.StrOpt('handoff_compression',
               default='auto',
               choices=('auto', 'none', 'zstd-1', 'zstd-3', 'zstd-9', 'zstd-15', 'zstd-19',
                        'xz-6'),
               help="""
Compression of the memory pages and disk chunks a VM handoff sends.

``auto`` chooses the codec and level of every batch (about 512 KiB) from the measured
send rate of the link and compression speed of this host's CPU: a high zstd level on a
slow link, a low one or none on a fast link or a loaded host. Compression of one batch
overlaps the sending of the previous one. The choices and the figures are logged at INFO.
Any other value forces that codec and level for every batch.

Possible values:

* ``auto`` (default)
* ``none``, ``zstd-1``, ``zstd-3``, ``zstd-9``, ``zstd-15``, ``zstd-19``, ``xz-6``

Related options:

* ``handoff_host``
"""),
    cfg.ListOpt('overlay_url_schemes',
                default=['http', 'https'],
                help="""
URL schemes that a server's ``overlay_url`` metadata may use for VM synthesis.

``file`` lets a user make nova-compute read any local file the service can read; enable
it only on test installations.

Possible values:

* A list of ``http``, ``https``, ``file``

Related options:

* ``overlay_allowed_hosts``, ``overlay_disallowed_hosts``, ``overlay_allowed_ports``
"""),
    cfg.ListOpt('overlay_allowed_hosts',
                default=[],
                help="""
Hosts an ``overlay_url`` may name: host names, IP addresses or CIDRs.

Empty (the default): any host except loopback, link-local, unspecified, multicast and
reserved addresses and this host's own addresses. Not empty: only these (which may then
include such addresses). Every address a name resolves to is checked before nova-compute
connects, and the peer again once connected; redirects are never followed. A refused
URL's fault says only that the cloud's overlay fetch policy does not allow it.

Possible values:

* A list of names, addresses and CIDRs, e.g. ``overlays.example.org,10.20.0.0/16``

Related options:

* ``overlay_disallowed_hosts``, ``overlay_allowed_ports``
"""),
    cfg.ListOpt('overlay_disallowed_hosts',
                default=[],
                help="""
Hosts an ``overlay_url`` may never name (names, addresses, CIDRs); wins over
``overlay_allowed_hosts``.

Possible values:

* A list of names, addresses and CIDRs, e.g. ``10.0.0.0/8``

Related options:

* ``overlay_allowed_hosts``
"""),
    cfg.ListOpt('overlay_allowed_ports',
                default=['80', '443'],
                help="""
TCP ports an ``overlay_url`` may name (explicitly or by its scheme's default).

Possible values:

* A list of port numbers; empty allows every port

Related options:

* ``overlay_allowed_hosts``
"""),
    cfg.IntOpt('overlay_fetch_time_limit',
               default=3600,
               min=0,
               help="""
Seconds one overlay's download from an ``overlay_url`` may take, from the first request
to the last byte (resumes and waits included); a server that trickles or stalls is cut
off then and the server goes to ERROR saying so. 0: no limit.

Related options:

* ``overlay_allowed_hosts``
"""),
]


def register_opts(conf):
    conf.register_group(cloudlet_group)
    conf.register_opts(cloudlet_opts, group=cloudlet_group)


def list_opts():
    # oslo-config-generator entry point (``oslo.config.opts``): (group, options) pairs.
    return [(cloudlet_group, cloudlet_opts)]
