"""The views in a real JupyterLab: a notebook run by Lab's own command, taps answered by the kernel.

A JupyterLab server (the installed one, ``python -m jupyterlab``) is started on 127.0.0.1 with
its own settings, workspace and runtime folders, and headless chromium opens a notebook that
simulates a small Cu/Cu2O specimen and displays ``explore(data)`` and ``orientation_view(result,
data)``. The notebook runs through ``notebook:run-all-cells``, as a user's "Run All" would. A
tap on a map travels over the kernel's comm channel to Python, which sends the new pattern
back: the pattern's values and title changing in the page shows that the live link works in Lab.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest

from stemkit.physics.specimens import polycrystal
from tests.viz.browser import (
    ARTIFACTS,
    FIND_VIEW,
    attach_log,
    click_data,
    signature,
    wait_for_change,
    wait_for_plot,
    wait_for_text,
)
from tests.viz.test_explore_browser import _log_floor, _weighted_sum

NOTEBOOK = "stemkit_in_lab.ipynb"
SPECIMEN = dict(scan_shape=(8, 8), pattern_size=64, k_step=0.05, seed=1)
CELLS = [
    # as in notebooks/: no pn.extension(); importing stemkit.viz loads holoviews' bokeh extension with
    # its JavaScript inline (stemkit.viz.view.load_extension), which is all the views need in JupyterLab
    "import stemkit\n"
    "import stemkit.viz\n"
    "from stemkit.physics.specimens import polycrystal\n"
    f"specimen = polycrystal((\"Cu\", \"Cu2O\"), **{SPECIMEN!r})\n"
    "data = specimen[\"intensity\"]",
    "stemkit.viz.explore(data)",
    "result = stemkit.OrientationMapper.pretrained(\"cu-cu2o\").predict(data, progress=False)\n"
    "stemkit.viz.orientation_view(result, data)",
]

# JupyterLab user settings for the test's server: no prompt to fetch Jupyter news (a toast over
# the notebook, and a request the server would make to jupyter.org), and no extension manager
# (it asks PyPI through the server).
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    "@jupyterlab/extensionmanager-extension/plugin.jupyterlab-settings": {"enabled": False},
}

SERVER_START_S = 120
KERNEL_START_MS = 120_000
RUN_ALL_MS = 180_000
TAP_MS = 60_000

NOTEBOOK_WIDGET = """
() => {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const widget of app.shell.widgets('main')) {
    if (widget.context && widget.context.path === '%s') return widget;
  }
  return null;
}
""" % NOTEBOOK

KERNEL_IDLE = """
() => {
  const widget = (%s)();
  const kernel = widget && widget.sessionContext.session && widget.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}
""" % NOTEBOOK_WIDGET.strip()

RUN_ALL = """
() => {
  const widget = (%s)();
  window.jupyterapp.shell.collapseLeft();  // the file browser off: the views' full width in the screenshots
  window.jupyterapp.shell.activateById(widget.id);
  window.jupyterapp.commands.execute('notebook:run-all-cells');  // not awaited: the test polls for the outputs
  return true;
}
""" % NOTEBOOK_WIDGET.strip()

# Every code cell has run (an execution count) and the kernel is idle again: the outputs of the run.
OUTPUTS_WHEN_DONE = """
() => {
  const widget = (%s)();
  const kernel = widget.sessionContext.session && widget.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle') return null;
  const cells = [];
  for (const cell of widget.content.widgets) {
    if (cell.model.type !== 'code') continue;
    if (cell.model.executionCount === null) return null;
    cells.push(cell.model.outputs.toJSON());
  }
  return cells;
}
""" % NOTEBOOK_WIDGET.strip()

# For a failure report: what the kernel holds once a tap went unanswered. Every comm panel opened (a JS-to-Python
# comm that never opened drops the taps; a Python-to-JS one that never opened drops the updates) and holoviews'
# event callbacks (one whose handler raised stays active and silently queues every later event).
KERNEL_STATE = r"""
import json
import pyviz_comms
from holoviews.plotting.bokeh.callbacks import Callback
print(json.dumps({
    "comms": {i: f"{type(c).__name__} {'open' if c._comm else 'NOT open'}"
              for i, c in pyviz_comms.JupyterCommManager._comms.items()},
    "callbacks": [[type(c).__name__, "active" if c._active else "idle", len(c._event_queue), len(c._queue)]
                  for c in Callback._callbacks.values()],
}))
"""

RUN_IN_KERNEL = """
async (code) => {
  const widget = (%s)();
  const kernel = widget.sessionContext.session.kernel;
  const outputs = [];
  const future = kernel.requestExecute({code: code, store_history: false});
  future.onIOPub = (msg) => {
    if (msg.content.text) outputs.push(msg.content.text);
    if (msg.content.ename) outputs.push(msg.content.ename + ': ' + msg.content.evalue);
  };
  await Promise.race([future.done, new Promise((resolve) => setTimeout(resolve, 20000))]);
  return outputs.join('') || '(no answer from the kernel within 20 s)';
}
""" % NOTEBOOK_WIDGET.strip()

# For a failure report: the page's side of each view's comm (panel's CommManager model). The manager sends nothing
# more until the kernel acknowledges its last message (or for its 5-s timeout): a tap that arrives meanwhile waits
# in the event buffer until a later event comes.
PAGE_COMMS = """
() => {
  const now = Date.now();
  const found = [];
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      if (!('_client_comm' in model)) continue;
      found.push({plot_id: model.plot_id, blocked: model._blocked, unblocks_in_ms: model._timeout - now,
                  buffered: model._event_buffer.map((e) => e.constructor.name + (e.msg_type ? ':' + e.msg_type : ''))});
    }
  }
  return found;
}
"""

# For a failure report: every comm message the page sends the kernel (time, type, comm id, target), to set beside
# the kernel's side (KERNEL_STATE); installed before JupyterLab opens its websocket.
COMM_LOG = """
window.stemkitCommLog = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  try {
    const bytes = typeof data === 'string' ? null : new Uint8Array(ArrayBuffer.isView(data) ? data.buffer : data);
    const text = bytes ? new TextDecoder().decode(bytes) : data;
    const type = text.match(/"msg_type":\\s*"(comm_\\w+)"/);
    if (type) {
      const comm = text.match(/"comm_id":\\s*"([^"]+)"/);
      const target = text.match(/"target_name":\\s*"([^"]+)"/);
      window.stemkitCommLog.push([Date.now() / 1000, type[1], comm && comm[1], target && target[1]]);
    }
  } catch (error) {
    window.stemkitCommLog.push([Date.now() / 1000, String(error)]);
  }
  return send.call(this, data);
};
"""

SCROLL_TO_PLOT = FIND_VIEW + """
const view = stemkitFindView(name);
view.canvas_view.el.scrollIntoView({block: 'center', inline: 'center'});
return true;
"""


def write_notebook(folder: Path) -> Path:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                       "language": "python"}
    path = folder / NOTEBOOK
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving ``tmp_path/root``: yields ``(url, token, root)``; always shut down."""
    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir()
    settings = home / "lab-settings"
    for name, values in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ,
               JUPYTER_CONFIG_DIR=str(home / "config"),  # none of the user's ~/.jupyter (a password, a port)
               JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               IPYTHONDIR=str(home / "ipython"))
    port, token = _free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0:  # containers and CI runners: Jupyter refuses root unless told
        command.append("--ServerApp.allow_root=True")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                                  start_new_session=True)  # its own process group: the kernels go with it
    try:
        _wait_until_answering(server, url, token, log_path)
        yield url, token, root
    finally:
        _shut_down(server, url, token)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, token: str, method: str = "GET") -> int:
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def _wait_until_answering(server: subprocess.Popen, url: str, token: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {server.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if _request(f"{url}/api/status", token) == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"JupyterLab did not answer within {SERVER_START_S} s:\n{log_path.read_text()[-4000:]}")


def _shut_down(server: subprocess.Popen, url: str, token: str) -> None:
    """Ask the server to stop (it shuts its kernels down); terminate, then kill, its process group if it does not."""
    if server.poll() is None:
        try:
            _request(f"{url}/api/shutdown", token, method="POST")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
    for sig, wait_s in ((None, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if sig is not None:
            try:
                os.killpg(server.pid, sig)
            except ProcessLookupError:
                break
        try:
            server.wait(wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


def scroll_to_plot(page, name: str) -> None:
    page.evaluate(f"(name) => {{ {SCROLL_TO_PLOT} }}", name)


def keep_console(page) -> list[str]:
    """Console warnings and errors of ``page``, and panel's messages: a Python error in a comm handler reaches
    the page only as a console warning ("Python failed with the following traceback"), which PageLog ignores."""
    kept = []
    page.on("console", lambda message: (message.type in ("warning", "error") or "Python" in message.text)
            and not message.text.startswith("[.WebGL") and kept.append(f"{message.type}: {message.text}"))
    return kept


def report_failure(page, log, console, log_path: Path) -> None:
    """Keep a screenshot and the server's log (the kernel's stderr included) under ``test-artifacts/viz/``;
    print the page's log and console and the kernel's comms and event callbacks."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if log_path.exists():
        shutil.copy(log_path, ARTIFACTS / "jupyterlab-server.log")
    if page is None:
        return
    page.screenshot(path=str(ARTIFACTS / "jupyterlab-failure.png"))
    print(f"page log: {log}")
    print("console:", *console, sep="\n  ")
    try:
        print("page comms:", json.dumps(page.evaluate(PAGE_COMMS)))
        print("comm messages sent:", json.dumps(page.evaluate("() => window.stemkitCommLog")))
        print("kernel:", page.evaluate(RUN_IN_KERNEL, KERNEL_STATE))
    except Exception as error:  # the page or the kernel gone: the report must not hide the test's own error
        print(f"kernel: not reached ({error})")


def screenshot_output(page, index: int, name: str) -> Path:
    """Keep a screenshot of the outputs of code cell ``index`` under ``test-artifacts/viz/``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.locator(".jp-Notebook .jp-CodeCell").nth(index).locator(".jp-Cell-outputWrapper").screenshot(path=str(path))
    return path


# This test failed now and then in full runs (the first tap never changed the pattern) until two fixes: the views
# acknowledge their comm's opening (stemkit.viz.view.acknowledge_on_open: with "Run All", the kernel dropped the
# explore view's first message, sent while the next cell ran, and panel then held a tap in the page), and
# tests/conftest.py no longer lets distributed's OMP_NUM_THREADS=1 leak into this server, which made that cell slow
# enough for the race. A failure prints both sides of the comms (report_failure). It takes 35-55 s: part of the
# default run.
def test_views_run_in_jupyterlab_and_answer_taps_through_the_kernel(browser, jupyterlab):
    url, token, root = jupyterlab
    write_notebook(root)
    cube = polycrystal(("Cu", "Cu2O"), **SPECIMEN)["intensity"]  # the notebook's specimen (seeded)

    context = browser.new_context(viewport={"width": 2000, "height": 1800})
    page = log = None
    console = []
    try:
        page = context.new_page()
        log = attach_log(context, page)
        console = keep_console(page)
        page.add_init_script(COMM_LOG)
        log.allowed_origins.append(url)
        page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}")
        page.wait_for_function(KERNEL_IDLE, timeout=KERNEL_START_MS)
        page.evaluate(RUN_ALL)
        outputs = page.wait_for_function(OUTPUTS_WHEN_DONE, timeout=RUN_ALL_MS, polling=250).json_value()
        errors = [o for cell in outputs for o in cell if o["output_type"] == "error"]
        assert not errors, f"the notebook raised: {errors}"
        stderr = [o["text"] for cell in outputs for o in cell if o.get("name") == "stderr"]
        assert not stderr, f"the notebook wrote to stderr (a warning of panel or holoviews?): {stderr}"
        for cell in outputs[1:]:
            assert any("application/vnd.holoviews_exec.v0+json" in o.get("data", {}) for o in cell), \
                f"a view was not displayed as a live panel: {cell}"

        # BokehJS arrives inline in the outputs (stemkit.viz.view.load_extension); the plots render after it
        page.wait_for_function("() => typeof window.Bokeh !== 'undefined' && Bokeh.documents.length >= 2",
                               timeout=TAP_MS)
        for name in ("explore-map", "explore-pattern", "orientation-ipf", "orientation-phase", "orientation-pattern"):
            wait_for_plot(page, name, timeout_ms=TAP_MS)
        assert signature(page, "explore-map")["finite"] == 8 * 8

        # explore: tap the virtual image; Python reads that pattern and updates the figure in place
        scroll_to_plot(page, "explore-map")
        before = signature(page, "explore-pattern")
        click_data(page, "explore-map", float(cube.scan_x[6]), float(cube.scan_y[1]))
        wait_for_text(page, "nm [1, 6]", timeout_ms=TAP_MS)
        shown = wait_for_change(page, "explore-pattern", before, timeout_ms=TAP_MS)
        expected = cube[1, 6].values
        assert shown["length"] == 64 * 64
        assert np.isclose(shown["total"], _weighted_sum(np.clip(expected, _log_floor(expected), None)), rtol=1e-4)
        page.mouse.move(1, 1)  # no hover tooltip in the screenshot
        screenshot_output(page, 1, "jupyterlab-explore")

        # orientation_view: tap the phase map; Python puts that pattern and its overlays into the figure in place
        scroll_to_plot(page, "orientation-phase")
        before = signature(page, "orientation-pattern")
        click_data(page, "orientation-phase", float(cube.scan_x[2]), float(cube.scan_y[6]))
        wait_for_text(page, "[6, 2] ", timeout_ms=TAP_MS)
        wait_for_change(page, "orientation-pattern", before, timeout_ms=TAP_MS)
        page.mouse.move(1, 1)
        screenshot_output(page, 2, "jupyterlab-orientation")
        log.assert_clean()
    except Exception:
        report_failure(page, log, console, root.parent / "jupyterlab.log")
        raise
    finally:
        context.close()
