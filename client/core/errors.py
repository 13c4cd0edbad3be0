"""Errors of the client core: one-line ``CloudletError``s with an exit code.

SDK and keystoneauth exceptions are translated (``translate``, ``api_errors``); a failed raw
API response becomes the error of its status, with nova's own message (``check_response``).
"""

import contextlib

import keystoneauth1.exceptions as ks_exc
import openstack.exceptions as sdk_exc

from cloudlet_compute.errors import CloudletError, ConflictError, FetchError, NotFoundError


class AuthError(CloudletError):
    """Keystone refused the credentials, or no cloud is configured."""

    exit_code = 8


class ApiError(CloudletError):
    """An OpenStack service answered with an error not covered by a more specific class."""


class UsageError(CloudletError):
    """The options do not make a valid request (the exit code of argparse's errors)."""

    exit_code = 2


def _message(exc):
    """The service's own message from an SDK/keystoneauth exception, on one line."""
    for attr in ("details", "message"):
        text = getattr(exc, attr, None)
        if isinstance(text, str) and text.strip():
            return " ".join(text.split())
    return " ".join(str(exc).split()) or type(exc).__name__


def _status(exc):
    for attr in ("status_code", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    return None


def translate(exc):
    """Return the ``CloudletError`` for an SDK or keystoneauth exception (or None)."""
    if isinstance(exc, CloudletError):
        return exc
    cause = exc.__cause__ or exc.__context__
    if type(exc) is sdk_exc.SDKException and isinstance(cause, ks_exc.ClientException):
        return translate(cause)   # conn.authorize() wraps keystoneauth's exception
    if isinstance(exc, sdk_exc.ConfigException):
        return AuthError("cloud configuration: %s" % _message(exc))
    status = _status(exc)
    if isinstance(exc, (ks_exc.Unauthorized, ks_exc.MissingAuthPlugin,
                        ks_exc.AuthorizationFailure)) or status == 401:
        return AuthError("authentication failed: %s" % _message(exc))
    if isinstance(exc, ks_exc.ConnectFailure):
        return FetchError("cannot reach the cloud: %s" % _message(exc))
    if isinstance(exc, (sdk_exc.NotFoundException, sdk_exc.ResourceNotFound)) or status == 404:
        return NotFoundError(_message(exc))
    if isinstance(exc, sdk_exc.ConflictException) or status == 409:
        return ConflictError(_message(exc))
    if isinstance(exc, (sdk_exc.SDKException, ks_exc.ClientException)):
        return ApiError(_message(exc))
    return None


@contextlib.contextmanager
def api_errors():
    """Turn SDK and keystoneauth exceptions raised inside into ``CloudletError``s (the
    original stays the ``__cause__``)."""
    try:
        yield
    except (sdk_exc.SDKException, ks_exc.ClientException) as exc:
        raise translate(exc) from exc


def response_message(resp):
    """The message of a failed raw response, on one line: nova's
    ``{"conflictingRequest": {"message": ...}}``, else the body's text, else the reason."""
    try:
        body = resp.json()
        message = next(iter(body.values()))["message"] if isinstance(body, dict) else body
    except (ValueError, TypeError, KeyError, StopIteration):
        message = resp.text or resp.reason
    return " ".join(str(message).split())


def check_response(resp):
    """Return ``resp`` if it succeeded; else raise the error of its status with the
    service's message: ``"MESSAGE (HTTP STATUS)"``."""
    if resp.status_code < 400:
        return resp
    cls = {401: AuthError, 404: NotFoundError, 409: ConflictError}.get(resp.status_code, ApiError)
    raise cls("%s (HTTP %d)" % (response_message(resp), resp.status_code))
