"""Contract: the nova internals that cloudlet_api and cloudlet_compute.nova rely on.

Nova gives no stable API for any of this. When one of these tests fails after a nova
upgrade, the named plug-in point changed shape: fix our code there before anything else.
"""

import inspect
import os

import pytest

import nova.policy
import nova.rpc
from nova.api.openstack.compute import extension_info
from nova.api.openstack.compute import routes
from nova.api.openstack import wsgi
from nova.compute import manager as compute_manager
from nova.compute import rpcapi as compute_rpcapi
from nova.image import glance as nova_glance
from nova import service
from nova.virt import driver as virt_driver
from nova.virt.libvirt import driver as libvirt_driver

from cloudlet_compute.nova import shim

NOVA_VERSION = "34.0.0"


def params(func):
    return list(inspect.signature(func).parameters)


def test_nova_is_the_pinned_version():
    from importlib.metadata import version
    assert version("nova") == NOVA_VERSION, "re-check every contract below, then re-pin"


def test_route_list_has_the_server_action_and_extensions_routes():
    table = dict(routes.ROUTE_LIST)
    action = table["/servers/{id}/action"]
    assert action["POST"][1] == "action"
    assert action["POST"][0] is routes.server_controller
    assert table["/extensions"]["GET"][1] == "index"
    assert table["/extensions/{id}"]["GET"][1] == "show"
    for path, methods in routes.ROUTE_LIST:
        assert isinstance(path, str) and isinstance(methods, (dict, str))


def test_api_router_builds_one_resource_per_route_on_a_routes_mapper():
    assert params(routes.APIRouterV21.__init__) == ["self", "custom_routes"]
    assert isinstance(inspect.getattr_static(routes.APIRouterV21, "factory"), classmethod)
    src = inspect.getsource(routes.APIRouterV21.__init__)
    assert "self.map.create_route(path, method, controller, action)" in src
    src = inspect.getsource(nova.api.openstack.ProjectMapper.create_route)
    assert "controller=controller" in src and "conditions=dict(method=[method])" in src
    src = inspect.getsource(routes._create_controller)
    assert "wsgi.Resource(main_controller())" in src


def test_wsgi_action_and_subcontroller_registration():
    @wsgi.action("x-test")
    def f():
        pass
    assert f.wsgi_action == "x-test"
    assert params(wsgi.Resource.register_subcontroller_actions) == ["self", "sub_controller"]
    assert "wsgi_actions" in inspect.getsource(wsgi.Resource.register_subcontroller_actions)


def test_extension_info_controller():
    assert params(extension_info.ExtensionInfoController.index) == ["self", "req"]
    assert params(extension_info.ExtensionInfoController.show) == ["self", "req", "id"]
    keys = {"alias", "description", "links", "name", "namespace", "updated"}
    assert all(set(e) == keys for e in extension_info.EXTENSION_LIST)


def test_policy_enforcer_is_reachable():
    assert params(nova.policy.init)[:1] == ["policy_file"]
    assert hasattr(nova.policy, "_ENFORCER")
    assert "register_rules(enforcer)" in inspect.getsource(nova.policy.init)


def test_libvirt_driver_hooks():
    assert params(libvirt_driver.LibvirtDriver.__init__) == ["self", "virtapi", "read_only"]
    assert params(libvirt_driver.LibvirtDriver.spawn) == [
        "self", "context", "instance", "image_meta", "injected_files", "admin_password",
        "allocations", "network_info", "block_device_info", "power_on", "accel_info"]
    assert params(libvirt_driver.LibvirtDriver._create_guest) == [
        "self", "context", "xml", "instance", "power_on", "pause", "post_xml_callback"]
    assert params(libvirt_driver.LibvirtDriver._get_guest_xml)[:6] == [
        "self", "context", "instance", "network_info", "disk_info", "image_meta"]
    spawn = inspect.getsource(libvirt_driver.LibvirtDriver.spawn)
    assert "self._create_guest_with_network(" in spawn
    assert "self._create_guest(" in inspect.getsource(
        libvirt_driver.LibvirtDriver._create_guest_with_network)


def test_image_pre_caching_reaches_the_driver_and_host_api_lists_compute_nodes():
    """``POST /os-aggregates/{id}/images`` ends in ``driver.cache_image`` (True: fetched);
    ``GET /os-cloudlet-bases`` reads the compute nodes through ``HostAPI``."""
    assert params(virt_driver.ComputeDriver.cache_image) == ["self", "context", "image_id"]
    src = inspect.getsource(compute_manager.ComputeManager.cache_images)
    assert "cached = self.driver.cache_image(context, image_id)" in src
    from nova.compute import api as compute_api
    assert params(compute_api.HostAPI.compute_node_get_all) == [
        "self", "context", "limit", "marker"]


def test_compute_manager_builds_endpoints_before_the_driver():
    init = inspect.getsource(compute_manager.ComputeManager.__init__)
    assert "self.additional_endpoints" in init
    assert init.index("additional_endpoints") < init.index("load_compute_driver")
    assert "self._compute = compute" in inspect.getsource(compute_manager.ComputeVirtAPI)
    assert "additional_endpoints" in inspect.getsource(service.Service.start)
    for deco in (compute_manager.reverts_task_state, compute_manager.wrap_instance_fault):
        assert callable(deco)
    assert params(compute_manager.ComputeManager._instance_update)[:3] == [
        "self", "context", "instance"]


def test_rpc_client_helpers():
    assert params(nova.rpc.get_client)[:3] == ["target", "version_cap", "serializer"]
    assert params(nova.rpc.ClientRouter.client) == ["self", "context"]
    assert compute_rpcapi.RPC_TOPIC == "compute"


def test_load_compute_driver_imports_from_nova_virt():
    src = inspect.getsource(virt_driver.load_compute_driver)
    assert "'nova.virt.%s' % compute_driver" in src
    assert params(virt_driver.load_compute_driver) == ["virtapi", "compute_driver"]


def test_image_api_methods():
    api = nova_glance.API
    assert params(api.create)[:4] == ["self", "context", "image_info", "data"]
    assert params(api.update)[:5] == ["self", "context", "id_or_uri", "image_info", "data"]
    assert "purge_props" in params(api.update)
    assert params(api.delete)[:3] == ["self", "context", "id_or_uri"]
    assert params(api.download)[:5] == ["self", "context", "id_or_uri", "data", "dest_path"]


def test_shim_installs_one_module(tmp_path):
    virt = tmp_path / "virt"
    virt.mkdir()
    path = shim.install(str(virt))
    assert path == str(virt / "cloudlet" / "__init__.py")
    assert shim.is_installed(str(virt))
    assert shim.install(str(virt)) == path  # idempotent
    assert os.listdir(virt) == ["cloudlet"] and os.listdir(virt / "cloudlet") == ["__init__.py"]
    ns = {}
    exec(compile(open(path).read(), path, "exec"), ns)
    from cloudlet_compute.nova.driver import CloudletDriver
    assert ns["CloudletDriver"] is CloudletDriver
    assert shim.uninstall(str(virt)) and not (virt / "cloudlet").exists()
    (virt / "cloudlet").mkdir()
    (virt / "cloudlet" / "__init__.py").write_text("somebody else's\n")
    with pytest.raises(RuntimeError):
        shim.uninstall(str(virt))


def test_driver_stats_reach_the_scheduler_host_state():
    from nova.compute import resource_tracker
    from nova.scheduler import host_manager, utils, weights
    assert params(libvirt_driver.LibvirtDriver.get_available_resource) == ["self", "nodename"]
    assert "stats.digest_stats(resources.get('stats'))" in inspect.getsource(
        resource_tracker.ResourceTracker._copy_resources)
    assert "self.stats = compute.stats or {}" in inspect.getsource(
        host_manager.HostState._update_from_compute_node)
    assert params(weights.BaseHostWeigher._weigh_object) == [
        "self", "obj", "weight_properties"]
    assert params(utils.get_weight_multiplier) == [
        "host_state", "multiplier_name", "multiplier_config"]
