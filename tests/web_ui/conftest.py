"""Headless Chromium (Debian's chromium and chromium-driver) driven by Selenium, and a dev
server with its Web UI, for tests that look at cases the way a responder does.

Without the browser the tests skip, saying how to install it; with QUENCH_REQUIRE_BROWSER=1
(as .ci/run sets) they fail instead, so CI cannot pass without having looked.
"""

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from temporalio.testing import WorkflowEnvironment

from codec.aesgcm import AesGcmCodec, encrypting_data_converter, generate_key_entry
from codec.server import generate_token
from stack.binaries import temporal_cli
from stack.processes import free_port
from tests.support import PROJECT_ROOT, register_search_attributes

# Debian's packages install them here; another Chromium and its matching driver can be named.
CHROMIUM = Path(os.environ.get("QUENCH_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("QUENCH_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = Path(os.environ.get("QUENCH_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))

# On a closed network Chromium's own background traffic (updates, sync, field trials) is
# refused, many connections at a time; these flags keep it to the page under test.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--lang=en-US",
    "--force-device-scale-factor=1",
    "--window-size=1280,1400",
)


@dataclass
class WebUi:
    """The dev server with its Web UI: a client for the cases, and the UI's address."""

    env: WorkflowEnvironment
    url: str
    namespace: str = "default"

    def workflows_url(self) -> str:
        return f"{self.url}/namespaces/{self.namespace}/workflows"


@pytest.fixture(scope="session")
def chromium_installed() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if not missing:
        return
    reason = (
        f"browser test needs {' and '.join(missing)}: `make browser` installs Debian's "
        "chromium and chromium-driver (or set QUENCH_CHROMIUM and QUENCH_CHROMEDRIVER)"
    )
    if os.environ.get("QUENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"QUENCH_REQUIRE_BROWSER=1 and the {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(chromium_installed, tmp_path_factory) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile. The driver path and the binary are both
    given, so Selenium never runs selenium-manager, which would try to download them."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest_asyncio.fixture(scope="module")
async def web_ui(chromium_installed, tmp_path_factory) -> AsyncIterator[WebUi]:
    """Its own dev server, in memory, with the Web UI on a free port and Quench's search
    attributes (the shared dev server runs without a UI). Its cases are encrypted, as
    outside the lab: the UI reads them through `quench codec-server`, a process of its own."""
    ui_port, codec_port = free_port(), free_port()
    ui_url = f"http://127.0.0.1:{ui_port}"
    key_id, key = generate_key_entry("web-ui")
    token = generate_token()
    codec_log = tmp_path_factory.mktemp("codec") / "codec.log"
    codec = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter",
        "codec-server",
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "QUENCH_PAYLOAD_KEYS": json.dumps({key_id: key}),
            "QUENCH_CODEC_TOKEN": token,
            "QUENCH_CODEC_PORT": str(codec_port),
            "QUENCH_CODEC_UI_ORIGIN": ui_url,
        },
        stdout=codec_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    env = await WorkflowEnvironment.start_local(
        data_converter=encrypting_data_converter(
            AesGcmCodec({key_id: base64.b64decode(key)}, key_id)
        ),
        dev_server_existing_path=str(temporal_cli()),
        ui=True,
        ui_port=ui_port,
        dev_server_extra_args=[
            "--log-level",
            "error",
            "--ui-disable-news-fetch",
            "--ui-codec-endpoint",
            f"http://127.0.0.1:{codec_port}/ui/{token}",
        ],
    )
    try:
        await register_search_attributes(env.client)
        ui = WebUi(env=env, url=ui_url)
        await _until_serving(ui.url)
        await _until_serving(f"http://127.0.0.1:{codec_port}/healthz")
        yield ui
    finally:
        await env.shutdown()
        codec.terminate()
        await codec.wait()


async def _until_serving(url: str) -> None:
    """The UI's port opens a moment after the frontend's, which is all start_local waits for."""
    async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(30):
        while True:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots are kept after the run (test-artifacts/web-ui, ignored by git)."""
    path = ARTIFACTS / "web-ui"
    path.mkdir(parents=True, exist_ok=True)
    return path
