"""Connecting to a VM handoff's destination cloud (``client.core.handoff.connect_destination``,
``destination_endpoint``): credentials, and errors that say "destination"."""

import keystoneauth1.exceptions as ks_exc
import openstack.exceptions as sdk_exc
import pytest

from client.core import errors, handoff
from tests.client.handoff_fakes import FakeConnect, destination


def test_connect_destination_from_clouds_yaml(monkeypatch):
    fake = FakeConnect()
    monkeypatch.setattr(handoff.openstack, "connect", fake)
    handoff.connect_destination(cloud="dest")
    # A password from $CLOUDLET_DEST_PASSWORD is not in the way of --dest-cloud.
    handoff.connect_destination(cloud="dest", password="from-env")
    assert fake.calls == [{"cloud": "dest"}, {"cloud": "dest"}]


def test_connect_destination_from_credentials_ignores_os_variables(monkeypatch):
    fake = FakeConnect()
    monkeypatch.setattr(handoff.openstack, "connect", fake)
    handoff.connect_destination(auth_url="http://d:5000/v3", username="u", password="p",
                            project="proj", user_domain="users")
    assert fake.calls == [{
        "load_yaml_config": False, "load_envvars": False, "auth_type": "password",
        "interface": "public", "identity_api_version": "3",
        "auth": {"auth_url": "http://d:5000/v3", "username": "u", "password": "p",
                 "project_name": "proj", "project_domain_name": "Default",
                 "user_domain_name": "users"}}]


@pytest.mark.parametrize("kwargs, text", [
    ({}, "the destination cloud is missing"),
    ({"cloud": "c", "auth_url": "http://d/v3"}, "not both"),
    ({"cloud": "c", "username": "u"}, "--dest-username go with --dest-auth-url"),
    ({"auth_url": "http://d/v3", "username": "u"},
     "--dest-auth-url needs --dest-password, --dest-project"),
])
def test_connect_destination_argument_errors(monkeypatch, kwargs, text):
    fake = FakeConnect()
    monkeypatch.setattr(handoff.openstack, "connect", fake)
    with pytest.raises(errors.UsageError, match=text):
        handoff.connect_destination(**kwargs)
    assert fake.calls == []


def test_connect_destination_errors_say_destination(monkeypatch):
    monkeypatch.setattr(handoff.openstack, "connect",
                        FakeConnect(ks_exc.Unauthorized("The request you have made requires "
                                                        "authentication.")))
    with pytest.raises(errors.AuthError, match="^destination cloud: authentication failed"):
        handoff.connect_destination(auth_url="http://d/v3", username="u", password="p",
                                project="x")

    def no_cloud(**kwargs):
        raise sdk_exc.ConfigException("Cloud nope was not found.")
    monkeypatch.setattr(handoff.openstack, "connect", no_cloud)
    with pytest.raises(errors.AuthError) as exc:
        handoff.connect_destination(cloud="nope")
    assert str(exc.value) == "destination cloud: cloud configuration: Cloud nope was not found."


def test_destination_endpoint_token_error_says_destination():
    dest = destination()
    dest.endpoint_for = lambda *a, **k: (_ for _ in ()).throw(
        ks_exc.EndpointNotFound("no compute"))
    with pytest.raises(errors.ApiError, match="^destination cloud: no compute"):
        handoff.destination_endpoint(dest)
