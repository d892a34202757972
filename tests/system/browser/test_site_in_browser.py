"""The rendered site as a reader sees it: built by tools/build_site.py (``make docs``), served
on a free local port, opened in headless Chromium with every request outside that server
refused. The index, a notebook page whose figures all load, and the search box finding "sigma".

Screenshots go to test-artifacts/ (listed at the end of pytest's output).
"""

import functools
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOK_PAGE = "notebooks/03_sigma_sensitivity.html"
VIEWPORT = {"width": 1280, "height": 900}

# Every image on the page has arrived and decoded to a picture of non-zero size.
IMAGES_LOADED_JS = "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per request in the test's output
        pass


@pytest.fixture(scope="module")
def site_url(tmp_path_factory):
    """The site, built as make docs builds it, served over HTTP (the search runs in a web
    worker, which Chromium does not start from file:// pages)."""
    site = tmp_path_factory.mktemp("site") / "site"
    built = subprocess.run([sys.executable, str(ROOT / "tools" / "build_site.py"), "--site_dir", str(site)],
                           cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-5000:]
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def page(browser, site_url, artifacts_dir, request):
    """A page in a fresh context that may only reach the site's own server; fails the test
    on any of its own requests that fail."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(site_url)
                  else route.abort())
    page = context.new_page()
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith(site_url) else None)
    page.on("response", lambda r: failed.append(f"{r.url} ({r.status})") if r.status >= 400 else None)
    yield page
    page.screenshot(path=artifacts_dir / f"{request.node.name}.png", full_page=False)
    context.close()
    assert not failed, f"requests to the site failed: {failed}"


def test_the_index_opens_with_its_figure_and_the_notebooks_in_the_navigation(page, site_url):
    page.goto(f"{site_url}/index.html")
    assert "nngk_lab" in page.title()
    page.wait_for_function(IMAGES_LOADED_JS)
    assert page.locator("article img[src$='kernel-classifier.png']").count() == 1
    nav = page.locator("nav.md-nav--primary").inner_text()
    for title in ("Data loading", "Sigma sensitivity", "Comparing losses"):
        assert title in nav


def test_a_notebook_page_shows_its_figures_and_the_static_explorer(page, site_url):
    page.goto(f"{site_url}/{NOTEBOOK_PAGE}")
    page.wait_for_function(IMAGES_LOADED_JS)
    figures = page.locator(".jupyter-wrapper img")
    assert figures.count() >= 3
    sizes = figures.evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.getBoundingClientRect().width])")
    assert all(natural > 50 and shown > 50 for natural, shown in sizes), sizes  # drawn, and not collapsed
    note = page.locator(".nngk-static-widget")
    assert note.count() == 1 and "sigma =" in note.inner_text()
    binder = page.get_by_role("link", name="Open this notebook on Binder")
    assert "urlpath=lab/tree/notebooks/03_sigma_sensitivity.ipynb" in binder.get_attribute("href")
    assert "Traceback" not in page.locator("article").inner_text()


def test_the_search_box_finds_sigma(page, site_url):
    page.goto(f"{site_url}/index.html")
    page.locator("label.md-search__icon, .md-search__input").first.click()
    page.locator("input.md-search__input").press_sequentially("sigma", delay=50)  # typed: the search reads keys
    results = page.locator(".md-search-result__item")
    results.first.wait_for()
    assert results.count() >= 3
    text = page.locator(".md-search-result").inner_text().lower()
    assert "sigma" in text and "sigma sensitivity" in text
