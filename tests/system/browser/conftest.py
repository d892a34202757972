"""Fixtures for the browser tests: JupyterLab on a free local port, headless Chromium driven
by Playwright, and :class:`LabNotebook`, which works a notebook's UI as a student would
(menus, keyboard, what is on the screen).

The tests need a Chromium binary: Debian's ``chromium`` package (``/usr/bin/chromium``) or
the path in ``NNGK_CHROMIUM``. Playwright's own browser download is not used. Without
Chromium the tests are skipped on a developer's machine but fail in CI (``CI`` set).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts"

# Headless Chromium as root in a container, with nothing reaching out to the network.
# Playwright's launch() gives every run a new, empty profile (user data dir).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 1100}

SERVER_START_TIMEOUT_S = 90
KERNEL_READY_TIMEOUT_MS = 90_000
RUN_ALL_TIMEOUT_MS = 420_000
UPDATE_TIMEOUT_MS = 60_000

# JupyterLab user settings for the test server: no news/update pop-ups over the notebook,
# and no autosave, so running the repository's notebooks never writes their outputs back.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}

SCREENSHOTS_KEY = pytest.StashKey[list]()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium binary; skip (developer machine) or fail (CI) when there is none."""
    path = os.environ.get("NNGK_CHROMIUM") or shutil.which("chromium")
    if path and Path(path).is_file():
        return path
    reason = ("Chromium not found: install Debian's chromium package (apt-get install chromium) "
              "or set NNGK_CHROMIUM to a Chromium binary")
    if _env_flag("CI"):
        pytest.fail(f"{reason}. CI must run the browser tests (.ci/run installs it).", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@dataclass(frozen=True)
class LabServer:
    url: str
    token: str

    def notebook_url(self, path: str) -> str:
        """JupyterLab showing only this notebook (``reset``: not the tabs an earlier test left)."""
        return f"{self.url}/lab/tree/{path}?reset&token={self.token}"

    def api(self, method: str, endpoint: str):
        request = urllib.request.Request(f"{self.url}/api/{endpoint}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        """End every session and its kernel, so the next test starts from fresh kernels."""
        for session in self.api("GET", "sessions"):
            self.api("DELETE", f"sessions/{session['id']}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_answering(proc: subprocess.Popen, server: LabServer, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}; its log: {log_path}\n"
                               + log_path.read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"{server.url}/api/status?token={server.token}", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer within {SERVER_START_TIMEOUT_S} s; its log: {log_path}")


def _stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (the server then shuts its kernels down), then
    SIGKILL if it has not exited after 30 s."""
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def jupyterlab(tmp_path_factory, artifacts_dir) -> LabServer:
    """JupyterLab serving the repository, its kernels in fast mode (``NNGK_FAST=1``).

    Jupyter's config, data and runtime folders, the notebooks' runs (``NNGK_RUNS``, shared
    by the tests of a session) and dataset (``NNGK_DATA``) are fresh temporary folders, so
    the developer's own Jupyter set-up, runs and data play no part.
    """
    home = tmp_path_factory.mktemp("jupyterlab")
    for name, values in LAB_SETTINGS.items():
        path = home / "config" / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ)
    # tests/conftest.py sets MPLBACKEND=Agg; a kernel inheriting it would not show figures.
    env.pop("MPLBACKEND", None)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
        NNGK_FAST="1",
        NNGK_RUNS=str(home / "runs"),
        NNGK_DATA=str(home / "data"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
    )
    port = _free_port()
    server = LabServer(url=f"http://127.0.0.1:{port}", token=secrets.token_hex(16))
    log_path = artifacts_dir / "jupyterlab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
             f"--ServerApp.token={server.token}", f"--ServerApp.root_dir={REPO}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_until_answering(proc, server, log_path)
            yield server
        finally:
            _stop_process_group(proc)


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, timeout=60_000)
        yield browser
        browser.close()


# What the open notebook's widgets show: the text of HTML/Label widgets and a SHA-256 of
# each image in a widget (Image widgets and plots in Output widgets). Hashing the bytes
# rather than comparing src: an Image widget's src is a blob URL, new on every redraw.
WIDGET_DISPLAY_JS = """async () => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const texts = [...panel.querySelectorAll('.widget-html-content, .widget-label')]
    .map(e => e.textContent.trim()).filter(t => t);
  const hex = buffer => [...new Uint8Array(buffer)].map(b => b.toString(16).padStart(2, '0')).join('');
  const images = await Promise.all([...panel.querySelectorAll('.jupyter-widgets img, img.jupyter-widgets')]
    .map(async img => hex(await crypto.subtle.digest('SHA-256', await (await fetch(img.src)).arrayBuffer()))));
  return {texts, images};
}"""

# True once Run All has finished: no prompt shows [*] (queued or running).
RUN_FINISHED_JS = """() => ![...document.querySelectorAll(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt')].some(p => p.textContent.includes('*'))"""

KERNEL_IDLE_JS = """() => {
  const name = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-KernelName');
  const status = [...document.querySelectorAll('.jp-StatusBar-Widget')].map(e => e.textContent).join(' ');
  return name && !/no kernel/i.test(name.textContent) && /\\|\\s*Idle/.test(status);
}"""


class LabNotebook:
    """One notebook open in JupyterLab in the browser."""

    def __init__(self, page, path: str, screenshots: list):
        self.page = page
        self.path = path
        self.screenshots = screenshots

    def wait_for_kernel_idle(self, timeout_ms: int = UPDATE_TIMEOUT_MS) -> None:
        self.page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout_ms)

    def run_all_cells(self) -> None:
        """Run > Run All Cells, wait for the last cell, and fail on any cell's error."""
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        self.page.wait_for_function(RUN_FINISHED_JS, timeout=RUN_ALL_TIMEOUT_MS)
        self.wait_for_kernel_idle()
        self.assert_no_errors()
        # Run All stops at an error and leaves the later cells unrun: [ ].
        prompts = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").evaluate_all(
            "cells => cells.filter(c => c.querySelector('.cm-content').textContent.trim())"
            ".map(c => c.querySelector('.jp-InputPrompt').textContent)")
        unrun = [i for i, prompt in enumerate(prompts) if not re.search(r"\[\d+\]", prompt)]
        assert not unrun, f"{self.path}: code cells {unrun} did not run (prompts {prompts})"

    def assert_no_errors(self) -> None:
        outputs = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").all_inner_texts()
        tracebacks = [text for text in outputs if "Traceback (most recent call last)" in text]
        assert not tracebacks, f"{self.path} shows an error:\n{tracebacks[0][-3000:]}"
        widget_errors = self.page.get_by_text(re.compile("Error displaying widget|model not found", re.I))
        assert widget_errors.count() == 0, f"{self.path}: {widget_errors.first.inner_text()}"

    def widget(self, description: str):
        """The widget whose description label reads ``description`` (case-insensitive)."""
        label = self.page.locator(".widget-label").filter(has_text=re.compile(rf"^\s*{re.escape(description)}\s*$", re.I))
        widget = self.page.locator(".jupyter-widgets.widget-inline-hbox").filter(has=label)
        widget.first.wait_for(state="visible")
        assert widget.count() == 1, f"{self.path}: {widget.count()} widgets described {description!r}"
        return widget

    def displayed(self) -> dict:
        """What the widgets show: texts and plot images."""
        return self.page.evaluate(WIDGET_DISPLAY_JS)

    def wait_for_display_change(self, before: dict, settle_s: float = 1.0) -> dict:
        """Wait until the widgets show something other than ``before``, the kernel is idle
        and the display has stayed the same for ``settle_s`` (every queued update drawn);
        return the new display."""
        deadline = time.monotonic() + UPDATE_TIMEOUT_MS / 1000
        last, since = before, time.monotonic()
        while time.monotonic() < deadline:
            self.page.wait_for_timeout(250)
            now = self.displayed()
            if now != last:
                last, since = now, time.monotonic()
            elif now != before and time.monotonic() - since >= settle_s and self.page.evaluate(KERNEL_IDLE_JS):
                return now
        raise AssertionError(f"{self.path}: the widgets' display did not change and settle within "
                             f"{UPDATE_TIMEOUT_MS / 1000:.0f} s; last seen: {last['texts']}")

    def screenshot(self, name: str, top) -> Path:
        """Save the window with ``top`` (a locator) scrolled to the top of the notebook."""
        # Just below the notebook's top edge, so the widget is whole and what it drives shows under it.
        top.first.evaluate("e => { e.scrollIntoView({block: 'start'}); "
                           "e.closest('.jp-WindowedPanel-outer')?.scrollBy(0, -60); }")
        self.page.wait_for_timeout(300)  # let the notebook repaint after scrolling
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=path)
        self.screenshots.append(path)
        return path


@pytest.fixture
def open_notebook(browser, jupyterlab, artifacts_dir, request):
    """``open_notebook("notebooks/x.ipynb")`` opens it in a new browser context, waits for
    its kernel, and returns a :class:`LabNotebook`. Checks the file on disk is unchanged
    afterwards; saves a screenshot if the test failed."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    opened: list[tuple[Path, bytes]] = []
    screenshots = request.config.stash.setdefault(SCREENSHOTS_KEY, [])

    def open_(path: str) -> LabNotebook:
        opened.append((REPO / path, (REPO / path).read_bytes()))
        page = context.new_page()
        page.goto(jupyterlab.notebook_url(path))
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=KERNEL_READY_TIMEOUT_MS)
        notebook = LabNotebook(page, path, screenshots)
        notebook.wait_for_kernel_idle(KERNEL_READY_TIMEOUT_MS)
        return notebook

    yield open_
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and context.pages:
        path = artifacts_dir / f"{request.node.name}-failure.png"
        context.pages[-1].screenshot(path=path)
        screenshots.append(path)
    context.close()
    jupyterlab.shut_down_kernels()
    for file, content in opened:
        assert file.read_bytes() == content, f"the browser test changed {file}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report  # read by open_notebook's teardown
    return report


def pytest_terminal_summary(terminalreporter, config):
    screenshots = config.stash.get(SCREENSHOTS_KEY, [])
    if screenshots:
        terminalreporter.write_sep("-", "browser test screenshots")
        for path in screenshots:
            terminalreporter.write_line(str(path))
