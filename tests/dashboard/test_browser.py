"""The Cloudlet panel in a real browser on the embedded OpenStack.

Horizon's dev server (``django-admin runserver``) with the panel enabled, headless Debian
chromium driven by Selenium, logged in as the non-admin user ``demo``:

Import Base VM -> Resume Base VM -> (the test customizes the guest through its serial
console) -> Create VM Overlay -> Download VM overlay -> Start VM Synthesis (the downloaded
overlay served over HTTP; then from the overlay image in Glance) -> the synthesized instance
is Active and its guest holds the customized memory and disk -> VM Handoff to cloud b -> the
instance is gone here and runs on b with the same memory and disk -> Shelve, then Unshelve
the resumed instance in Horizon's Instances panel: it comes back with its memory and disk.
Each Cloudlet step leaves a screenshot in doc/screenshots/.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from client.core.bases import import_base_package
from cloudlet_compute import imagemodel as model
from stack import story as storymod
from stack import topology
from stack.guest import guest
from stack.httpserve import FileServer
from tests.compute.test_story import assert_same_guest
from tests.conftest import scratch_root
from tests.support import cloud, processes

REPO = guest.REPO_DIR
STATE = REPO / ".state" / "horizon"
SCREENSHOTS = REPO / "doc" / "screenshots"
WINDOW = (1280, 800)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

LOCAL_SETTINGS = '''\
# Written by tests/dashboard/test_browser.py: Horizon's dev server on the embedded stack.
import dashboard_panel.enabled as _cloudlet_enabled
import openstack_dashboard.local.enabled as _local_enabled

# Enable the panel as if its enabled file were in openstack_dashboard/local/enabled/,
# without writing into Horizon's tree.
if _cloudlet_enabled.__path__[0] not in _local_enabled.__path__:
    _local_enabled.__path__.append(_cloudlet_enabled.__path__[0])

DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
OPENSTACK_KEYSTONE_URL = "{keystone}"
CACHES = {{"default": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}}}
SECRET_KEY = "{secret}"
SESSION_ENGINE = "django.contrib.sessions.backends.file"
SESSION_FILE_PATH = "{sessions}"
FILE_UPLOAD_TEMP_DIR = "{upload}"
# The test's overlay server is on this host's loopback, on an ephemeral port.
CLOUDLET_OVERLAY_ALLOWED_HOSTS = ["127.0.0.1"]
CLOUDLET_OVERLAY_ALLOWED_PORTS = []
# Compressed CSS/JS go here, not beside Horizon in site-packages.
STATIC_ROOT = "{static}"
LOGGING_CONFIG = None
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_chromium():
    """Debian's chromium and chromium-driver (installed once, idempotently)."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium",
                    "chromium-driver"], check=True, env=env, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def stack_up():
    return cloud.up()


@pytest.fixture(scope="module")
def horizon(stack_up):
    """Horizon's dev server with the panel, on a free 127.0.0.1 port; yields its URL."""
    for d in (STATE, STATE / "local", STATE / "upload", STATE / "sessions"):
        os.makedirs(d, exist_ok=True)
    (STATE / "local" / "__init__.py").write_text("")
    (STATE / "local" / "local_settings.py").write_text(LOCAL_SETTINGS.format(
        keystone=cloud.stack.cloud("a").keystone_url, secret=uuid.uuid4().hex,
        upload=STATE / "upload", static=STATE / "static",
        sessions=STATE / "sessions"))
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(STATE), str(REPO)]))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = open(STATE / "runserver.log", "w")
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "django-admin"), "runserver",
         "127.0.0.1:%d" % port, "--noreload", "--settings=openstack_dashboard.settings"],
        cwd=STATE, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d" % port
    try:
        def ready():
            if proc.poll() is not None:
                raise AssertionError("runserver exited; see %s" % (STATE / "runserver.log"))
            try:
                return requests.get(url + "/auth/login/", timeout=5).status_code == 200
            except requests.RequestException:
                return False
        cloud.wait_for(ready, 90, "Horizon's dev server", interval=0.5)
        yield url
    finally:
        processes.stop(proc)
        log.close()


@pytest.fixture(scope="module")
def browser():
    _ensure_chromium()
    downloads = scratch_root("browser-downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=%d,%d" % WINDOW)
    profile = scratch_root("browser-profile")
    options.add_argument("--user-data-dir=" + profile)
    options.add_experimental_option("prefs", {
        "download.default_directory": downloads, "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": downloads})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(downloads, ignore_errors=True)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def base_package(libvirt_conn):
    """A base package of the tiny guest, made with the ``cloudlet`` CLI."""
    story = storymod.Story(libvirt_conn, scratch_root("ui"))
    try:
        base_id = story.create_base(story.boot_source())
        package = os.path.join(story.root, "base.zip")
        storymod.cloudlet(story.home, "base", "export", base_id, package)
        yield package, base_id
    finally:
        story.cleanup()


def shot(driver, name, table=None):
    """Save a screenshot to doc/screenshots/NAME.png (palette PNG when Pillow is there),
    scrolled to ``table`` if given."""
    os.makedirs(SCREENSHOTS, exist_ok=True)
    if table:
        driver.execute_script("document.getElementById(arguments[0]).closest('div')"
                              ".parentNode.scrollIntoView()", table)
    path = SCREENSHOTS / (name + ".png")
    driver.save_screenshot(str(path))
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as img:
        img.convert("RGB").quantize(colors=128).save(path, optimize=True)


class Panel:
    """A page of Horizon's Project dashboard in the browser (the Cloudlet panel unless
    ``page`` says another)."""

    def __init__(self, driver, url, page="cloudlet"):
        self.driver, self.url = driver, "%s/project/%s/" % (url, page)

    def open(self):
        self.driver.get(self.url)
        self.wait(EC.presence_of_element_located((By.ID, "instances")))

    def wait(self, condition, timeout=60):
        return WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(condition)

    def click(self, element_id):
        self.wait(EC.element_to_be_clickable((By.ID, element_id))).click()

    def modal(self):
        return self.wait(EC.visibility_of_element_located(
            (By.CSS_SELECTOR, "#modal_wrapper .modal .modal-footer")))

    def submit_modal(self):
        self.modal()
        self.driver.find_element(
            By.CSS_SELECTOR, "#modal_wrapper .modal .modal-footer .btn-primary").click()

    def run_workflow(self, action_id, name, screenshot, fields=(), choices=()):
        """Open the workflow behind button ``action_id``; fill ``fields`` and pick
        ``choices`` (pairs of field id and text, select id and label prefix), name the
        instance ``name`` with flavor cl.tiny; screenshot ``screenshot``; submit."""
        self.click(action_id)
        for field_id, text in fields:
            self.fill(field_id, text)
        for select_id, label in choices:
            self.choose(select_id, label)
        self.fill("id_name", name)
        self.choose("id_flavor", "cl.tiny ")
        shot(self.driver, screenshot)
        self.submit_modal()

    def row_menu_action(self, table, object_id, action):
        """Click row action ``action`` of row ``object_id``, from the row's dropdown menu."""
        row = self.wait(EC.presence_of_element_located(
            (By.CSS_SELECTOR, "#%s tr[data-object-id='%s']" % (table, object_id))))
        row.find_element(By.CSS_SELECTOR, ".btn-group .dropdown-toggle").click()
        self.click("%s__row_%s__action_%s" % (table, object_id, action))

    def fill(self, field_id, text):
        field = self.wait(EC.visibility_of_element_located((By.ID, field_id)))
        field.clear()
        field.send_keys(text)

    def choose(self, select_id, label_prefix):
        """Pick the option whose label starts with ``label_prefix`` in one of Horizon's
        themable selects (a dropdown in front of a hidden <select>)."""
        select = self.wait(EC.presence_of_element_located((By.ID, select_id)))
        value = next(o.get_attribute("value") for o in Select(select).options
                     if o.get_attribute("textContent").strip().startswith(label_prefix))
        widget = select.find_element(By.XPATH, "./ancestor::div[contains(@class, "
                                               "'themable-select')][1]")
        self.wait(EC.element_to_be_clickable(
            widget.find_element(By.CSS_SELECTOR, "button.dropdown-toggle"))).click()
        self.wait(EC.element_to_be_clickable(
            widget.find_element(By.CSS_SELECTOR, "a[data-select-value='%s']" % value))).click()
        assert Select(select).first_selected_option.get_attribute("value") == value

    def row(self, table, display):
        return self.driver.find_elements(
            By.CSS_SELECTOR, "#%s tr[data-display='%s']" % (table, display))

    def row_id(self, table, display, timeout=300):
        def object_id(driver):
            try:   # the row may be re-rendered (ajax update, reload) between find and read
                rows = self.row(table, display)
                return rows[0].get_attribute("data-object-id") if rows else None
            except StaleElementReferenceException:
                return None
        return self.wait(object_id, timeout)

    def wait_row_status(self, table, display, status, timeout=300, column=None):
        """Wait until the row shows ``status`` (its ajax row update refreshes it; the page
        is reloaded every 20 s as well). Fails early on Error."""
        deadline = time.monotonic() + timeout
        reload_at = time.monotonic() + 20
        while True:
            try:
                rows = self.row(table, display)
                cells = [c.text.strip() for c in rows[0].find_elements(By.TAG_NAME, "td")] \
                    if rows else []
            except StaleElementReferenceException:
                cells = []
            if status in cells and (column is None or cells[column] == status):
                return cells
            assert "Error" not in cells, "%s %s: %s" % (table, display, cells)
            if time.monotonic() > deadline:
                raise AssertionError("%s row %s never showed %s: %s"
                                     % (table, display, status, cells))
            if time.monotonic() > reload_at:
                self.open()
                reload_at = time.monotonic() + 20
            time.sleep(1)

    def wait_row_gone(self, table, display, timeout=300):
        """Wait until the table has no row ``display`` (reloading the page every 20 s)."""
        deadline = time.monotonic() + timeout
        while self.row(table, display):
            assert time.monotonic() < deadline, "%s row %s still there" % (table, display)
            time.sleep(20)
            self.open()

    def messages(self):
        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, ".messages .alert")]


def test_cloudlet_story_in_the_browser(horizon, browser, base_package, stack_up, cloud_b):
    demo = cloud.stack.connect("cloudlet-demo")
    admin = cloud.stack.connect("cloudlet-admin")
    demo_b, admin_b = cloud_b
    tag = "ui-%s" % uuid.uuid4().hex[:6]
    panel = Panel(browser, horizon)
    servers, images, servers_b, images_b = [], [], [], {}
    try:
        # Log in as the non-admin user; the panel is in Project > Compute.
        # (Straight to the panel: Horizon's Overview needs a volume service this stack
        # does not run.)
        browser.get(horizon + "/auth/login/?next=/project/cloudlet/")
        panel.fill("id_username", "demo")
        panel.fill("id_password", topology.DEMO_PASSWORD)
        browser.find_element(By.ID, "loginBtn").click()
        panel.wait(EC.presence_of_element_located((By.ID, "instances")))
        assert browser.find_element(By.CSS_SELECTOR, "a[href='/project/cloudlet/']")
        shot(browser, "1-cloudlet-panel")

        # Import Base VM: upload the zip; a progress bar shows while it goes up.
        panel.click("images__action_import")
        panel.fill("id_name", tag)
        browser.find_element(By.ID, "id_package").send_keys(base_package[0])
        shot(browser, "2-import-base")
        panel.submit_modal()
        panel.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, ".modal-progress-loader")))
        shot(browser, "2b-import-base-progress")
        disk_name = tag + model.SUFFIXES[model.BASE_DISK]
        base_image = panel.row_id("images", disk_name)
        disk = demo.image.get_image(base_image)
        images += [base_image] + [disk.properties[t] for t in model.LINKED_TYPES]
        assert disk.properties[model.PROPERTY_BASE_ID] == base_package[1]
        panel.wait_row_status("images", disk_name, "Active")
        assert any("Imported base VM" in m for m in panel.messages()), panel.messages()

        # Resume Base VM: a workflow with the flavors that fit the base.
        panel.run_workflow("images__row_%s__action_resume" % base_image, tag + "-resumed",
                           "3-resume-base")
        resumed = panel.row_id("instances", tag + "-resumed")
        servers.append(resumed)
        cells = panel.wait_row_status("instances", tag + "-resumed", "Active")
        assert "Resumed Base VM" in cells
        shot(browser, "3b-resumed-base-vm", "instances")

        # The user customizes the resumed VM (here: through its serial console).
        with cloud.guest_channel(admin, resumed) as chan:
            chan.run(storymod.CUSTOMIZE.format(token=uuid.uuid4().hex), timeout=120)
            expected = storymod.parse_observation(chan.run(storymod.OBSERVE))

        # Create VM Overlay (a batch action: the form posts at once); the task column
        # follows it.
        panel.click("instances__row_%s__action_create_overlay" % resumed)
        overlay_name = tag + "-resumed-overlay"
        overlay = panel.row_id("overlays", overlay_name, timeout=60)
        images.append(overlay)
        shot(browser, "4-create-vm-overlay", "overlays")
        panel.wait_row_status("overlays", overlay_name, "Active")
        panel.wait_row_status("instances", tag + "-resumed", "None", timeout=120)
        shot(browser, "4b-vm-overlay-ready", "overlays")

        # Download VM overlay: the browser saves the zip Glance streams through Horizon.
        panel.click("overlays__row_%s__action_download" % overlay)
        zip_path = os.path.join(browser.downloads, overlay_name + ".zip")
        cloud.wait_for(lambda: os.path.exists(zip_path) and not any(
            f.endswith(".crdownload") for f in os.listdir(browser.downloads)), 120,
            "the overlay download")
        assert os.path.getsize(zip_path) == demo.image.get_image(overlay).size

        # Start VM Synthesis from the downloaded overlay, served over HTTP.
        with FileServer(browser.downloads) as server:
            panel.run_workflow("instances__action_synthesis", tag + "-synth", "5-vm-synthesis",
                               fields=[("id_overlay_url", server.url(overlay_name + ".zip"))])
            synthesized = panel.row_id("instances", tag + "-synth")
            servers.append(synthesized)
            cells = panel.wait_row_status("instances", tag + "-synth", "Active")
        assert "Synthesized VM" in cells
        shot(browser, "5b-vm-synthesis-done", "instances")
        assert demo.compute.get_server(synthesized).status == "ACTIVE"
        with cloud.guest_channel(admin, synthesized) as chan:
            observed = storymod.parse_observation(chan.run(storymod.OBSERVE))
        assert_same_guest(expected, observed)

        # Start VM Synthesis from the overlay image itself: nova-compute reads it from
        # Glance (no web server); the same guest again. Deleted before the handoff.
        panel.run_workflow("instances__action_synthesis", tag + "-from-image",
                           "5c-vm-synthesis-from-image",
                           choices=[("id_overlay_image", overlay_name)])
        from_image = panel.row_id("instances", tag + "-from-image")
        servers.append(from_image)
        panel.wait_row_status("instances", tag + "-from-image", "Active")
        assert demo.compute.get_server(from_image).metadata.get(
            model.METADATA_OVERLAY_IMAGE) == overlay
        with cloud.guest_channel(admin, from_image) as chan:
            observed = storymod.parse_observation(chan.run(storymod.OBSERVE))
        assert_same_guest(expected, observed)
        cloud.delete_server(demo, from_image)

        # VM Handoff to cloud b (its Keystone and the demo user there): the instance
        # leaves this cloud and runs on b with the same memory and disk.
        images_b = import_base_package(demo_b, base_package[0], name=tag)
        panel.click("instances__row_%s__action_handoff" % synthesized)
        panel.modal()
        text = browser.find_element(By.ID, "handoff_modal").text
        assert "Keystone endpoint for destination OpenStack" in text
        panel.fill("id_dest_keystone", cloud.stack.cloud("b").keystone_url)
        panel.fill("id_dest_account", "demo")
        panel.fill("id_dest_password", topology.DEMO_PASSWORD)
        panel.fill("id_dest_project", "demo")
        panel.fill("id_dest_vmname", tag + "-moved")
        shot(browser, "6-vm-handoff")
        panel.submit_modal()
        panel.wait(lambda d: any("Handoff of the instance started" in m
                                 for m in panel.messages()), timeout=120)
        shot(browser, "6b-vm-handoff-started", "instances")
        panel.wait_row_gone("instances", tag + "-synth", timeout=600)
        moved = [s for s in demo_b.compute.servers() if s.name == tag + "-moved"]
        assert len(moved) == 1, moved
        servers_b.append(moved[0].id)
        assert demo_b.compute.get_server(moved[0].id).status == "ACTIVE"
        assert demo.compute.find_server(synthesized) is None
        with cloud.guest_channel(admin_b, moved[0].id) as chan:
            observed = storymod.parse_observation(chan.run(storymod.OBSERVE))
        assert_same_guest(expected, observed)

        # Shelve and Unshelve the resumed server in Horizon's own Instances panel: nova's
        # shelve stores its overlay, unshelve synthesizes it; the guest goes on.
        instances = Panel(browser, horizon, page="instances")
        instances.open()
        instances.row_menu_action("instances", resumed, "shelve")
        instances.wait_row_status("instances", tag + "-resumed", "Shelved Offloaded")
        instances.row_menu_action("instances", resumed, "shelve")   # now Unshelve Instance
        instances.wait_row_status("instances", tag + "-resumed", "Active")
        with cloud.guest_channel(admin, resumed) as chan:
            observed = storymod.parse_observation(chan.run(storymod.OBSERVE))
        assert_same_guest(expected, observed)
    except BaseException:
        browser.save_screenshot(str(STATE / "failure.png"))
        (STATE / "failure.html").write_text(browser.page_source)
        raise
    finally:
        for server_id in servers:
            cloud.delete_server(demo, server_id)
        for server_id in servers_b:
            cloud.delete_server(demo_b, server_id)
        for image_id in images_b.values():
            demo_b.image.delete_image(image_id, ignore_missing=True)
        for image_id in images:
            demo.image.delete_image(image_id, ignore_missing=True)
        for image in demo.image.images(owner=demo.current_project_id):
            if image.name and image.name.startswith(tag):
                demo.image.delete_image(image.id, ignore_missing=True)
