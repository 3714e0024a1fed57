"""The website as a reader meets it: every page opened in a real browser (headless Chromium).

A built site (``bash scripts/build_book.sh``) is served on loopback and each page is loaded in
Debian's Chromium, driven by Playwright (``playwright`` drives the browser the machine has; it
downloads none). The checks are those a reader would notice: a broken image, math left as
``$...$`` or ``\\(...\\)`` because MathJax did not typeset it, a Python traceback or an error
output, a chapter with fewer figures than its cells draw, a Colab or download button that points
at the wrong notebook, a search that does not find the chapter about a term. Screenshots of a few
pages are saved next to the site (``_build/screenshots``) to be looked at.

Run with ``bash scripts/test_site.sh`` (it builds the site first when there is none, and CI runs
it on a smoke-profile build). Without ``COURSE_SITE_DIR`` these tests are skipped: the plain test
command does not build the website.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import quote

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE_ENV = "COURSE_SITE_DIR"
SITE = Path(os.environ[SITE_ENV]).resolve() if os.environ.get(SITE_ENV) else None
pytestmark = pytest.mark.skipif(
    SITE is None, reason=f"needs a built website: bash scripts/test_site.sh (sets {SITE_ENV})"
)

#: Flags from the machine's notes: no background networking (the sandbox has no network), no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
]
#: Pages photographed for a person to look at.
SCREENSHOT_PAGES = ("book/intro", "book/04_evaluation", "book/10_retinanet", "book/13_fcos", "book/14_capstone")
#: Search terms and a page each must find.
SEARCHES = {"focal": "book/10_retinanet", "anchor": "book/07_faster_rcnn", "centerness": "book/13_fcos"}


def _toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return pages


PAGES = _toc_pages()


def expected_figures(page: str) -> int:
    """How many figures the page's cells draw: code cells that call ``plt.show()`` and do not hide
    their output. Each draws at least one; the page must show at least this many images."""
    md = ROOT / f"{page}.md"
    if not md.exists() or "jupytext:" not in md.read_text()[:400]:
        return 0
    count = 0
    for cell in jupytext.read(md).cells:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "code" and "plt.show()" in cell.source and not tags & {"remove-output", "remove-cell"}:
            count += 1
    return count


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # one line per file would bury pytest's report
        pass


@pytest.fixture(scope="module")
def server():
    """The site served on an ephemeral loopback port (search needs http, not file://)."""
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _chromium() -> str:
    for name in (os.environ.get("COURSE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    message = "no Chromium: install Debian's `chromium` (scripts/test_site.sh does) or set COURSE_CHROMIUM"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings playwright")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    yield tab
    context.close()


def _open(page, server: str, name: str) -> None:
    """Load a page and wait until MathJax (when the page has math) has typeset it."""
    response = page.goto(f"{server}/{name}.html", wait_until="load")
    assert response is not None and response.ok, f"{name}.html: HTTP {response and response.status}"
    page.wait_for_load_state("networkidle")  # MathJax and the theme's scripts are loaded
    # MathJax 3 typesets after load; its startup promise resolves when the page is done.
    page.evaluate("() => (window.MathJax && MathJax.startup && MathJax.startup.promise) || null")


# Text that must not be visible outside code: math MathJax left alone, a traceback.
_UNRENDERED = re.compile(r"\$[^$\s][^$]{0,200}\$|\\\(|\\\[|\\begin\{")
_VISIBLE_PROSE = """() => {
  const root = document.querySelector('main') || document.body;
  const clone = root.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .cell_input, .highlight').forEach(e => e.remove());
  return clone.innerText;
}"""


@pytest.mark.parametrize("name", PAGES)
def test_page_renders_cleanly(page, server, name):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _open(page, server, name)
    broken = page.evaluate(
        "() => Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
    )
    assert not broken, f"{name}: broken images {broken}"
    prose = page.evaluate(_VISIBLE_PROSE)
    unrendered = _UNRENDERED.findall(prose)
    assert not unrendered, f"{name}: math left unrendered: {unrendered[:5]}"
    assert page.locator("mjx-merror, .MathJax_Error").count() == 0, f"{name}: MathJax reports an error"
    text = page.inner_text("main") if page.locator("main").count() else page.inner_text("body")
    assert "Traceback (most recent call last)" not in text, f"{name}: shows a Python traceback"
    error_outputs = page.locator(".cell_output .traceback, .cell_output .output.error, .cell_output .stderr")
    assert error_outputs.count() == 0, f"{name}: an error output: {error_outputs.first.inner_text()[:500]}"
    # Jupyter Book 1 writes sphinx-thebe's inline config script twice on every page (an upstream
    # duplicate; thebe is not used here), so redeclaring its constant is the one error let through.
    errors = [e for e in errors if "THEBE_JS_URL" not in e]
    assert not errors, f"{name}: JavaScript errors {errors}"
    figures = page.locator(".cell_output img").count()
    assert figures >= expected_figures(name), (
        f"{name}: {figures} figures shown, its cells draw {expected_figures(name)}"
    )
    if name in SCREENSHOT_PAGES:
        shots = SITE.parent / "screenshots"
        shots.mkdir(exist_ok=True)
        page.screenshot(path=str(shots / f"{Path(name).name}.png"), full_page=False)
        if figures:  # and the page's first figure, as the reader sees it
            first = page.locator(".cell_output img").first
            first.scroll_into_view_if_needed()
            first.screenshot(path=str(shots / f"{Path(name).name}_figure.png"))


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def _notebook_pages() -> list[str]:
    """Pages built from a MyST notebook: they have launch and download buttons."""
    return [p for p in PAGES if (ROOT / f"{p}.md").exists() and "jupytext:" in (ROOT / f"{p}.md").read_text()[:400]]


@pytest.mark.parametrize("name", _notebook_pages())
def test_colab_and_download_buttons_point_at_this_notebook(page, server, name):
    repo = _config()["repository"]
    slug = repo["url"].rstrip("/").removeprefix("https://github.com/")
    _open(page, server, name)
    colab = page.evaluate(
        "() => Array.from(document.querySelectorAll('.dropdown-launch-buttons a')).map(a => a.href)"
    )
    want = f"https://colab.research.google.com/github/{slug}/blob/{repo['branch']}/{name}.ipynb"
    assert colab == [want], f"{name}: launch buttons {colab}, expected the Colab link {want}"
    assert (ROOT / f"{name}.ipynb").exists(), f"{name}: the Colab button's notebook is not committed"
    downloads = page.evaluate(
        "() => Array.from(document.querySelectorAll('.dropdown-download-buttons a[href*=\"_sources\"]')).map(a => a.href)"
    )
    stem = Path(name).name
    assert sorted(Path(h).name for h in downloads) == [f"{stem}.ipynb", f"{stem}.md"], f"{name}: downloads {downloads}"
    for href in downloads:
        response = page.request.get(href)
        assert response.ok, f"{name}: download link {href} gives HTTP {response.status}"
        if href.endswith(".ipynb"):  # the executed notebook, with the outputs the page shows
            cells = response.json()["cells"]
            assert any(c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{href} has no outputs"


@pytest.mark.parametrize(("term", "expected"), SEARCHES.items())
def test_search_finds_the_chapter(page, server, term, expected):
    page.goto(f"{server}/search.html?q={quote(term)}", wait_until="load")
    results = page.locator("#search-results ul.search li a")
    results.first.wait_for(timeout=20000)
    hrefs = page.evaluate(
        "() => Array.from(document.querySelectorAll('#search-results ul.search li a')).map(a => a.getAttribute('href'))"
    )
    assert any(expected in (h or "") for h in hrefs), f"search {term!r}: {expected} not among {hrefs[:10]}"
