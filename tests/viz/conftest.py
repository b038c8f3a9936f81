"""Fixtures for browser tests: Debian's chromium driven by playwright, and panel apps served in a thread."""

from __future__ import annotations

import socket
import time

import pytest

from tests.viz.browser import CHROMIUM_ARGS, attach_log, chromium_path


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("browser tests need Debian's chromium: run `make browser` (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright: pip install -e '.[test]'")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page and its :class:`~tests.viz.browser.PageLog`; every off-site request is blocked and recorded."""
    context = browser.new_context(viewport={"width": 1800, "height": 1000})
    page = context.new_page()
    log = attach_log(context, page)
    yield page, log
    context.close()


@pytest.fixture
def serve():
    """``serve(make_app) -> url``: serve a panel app on 127.0.0.1 in a thread, for the test's duration."""
    import panel as pn

    servers = []

    def start(make_app) -> str:
        port = _free_port()
        server = pn.serve({"app": make_app}, port=port, address="127.0.0.1", websocket_origin=[f"127.0.0.1:{port}"],
                          threaded=True, show=False)
        servers.append(server)
        _wait_for_port(port)
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"the panel server did not open port {port} within {timeout} s")
