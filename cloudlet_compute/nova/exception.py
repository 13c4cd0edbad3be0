"""Nova exceptions for engine failures: what the instance fault and the log say."""

from nova import exception


class CloudletTaskFailed(exception.NovaException):
    msg_fmt = "Cloudlet %(task)s failed: %(reason)s"


class CloudletBaseUnavailable(exception.NovaException):
    msg_fmt = "Cloudlet base VM %(base_id)s is not usable on this host: %(reason)s"


class CloudletBuildInterrupted(exception.NovaException):
    msg_fmt = ("Build interrupted: nova-compute restarted before the server was running; "
               "delete it and create it again")
