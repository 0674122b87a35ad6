"""Checks of the built Jupyter Book in headless Chromium.

The tests build nothing: run ``scripts/build_book.sh`` (or ``scripts/run_notebooks.sh``) first.
Without ``_build/html`` or a Chromium binary they are skipped, unless the environment variable
``SWE_TOOLKIT_REQUIRE_BOOK=1`` is set (as ``.ci/run`` does): then they fail. The pages are served from a local
HTTP server on 127.0.0.1, as a reader's browser would load them, and screenshots are written to
``_build/screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"

# Pages that are screenshotted, by a short name used for the screenshot file.
PAGES = {
    "intro": "book/intro.html",
    "closed_form": "notebooks/02_closed_form.html",
    "eight_languages": "notebooks/04_eight_languages.html",
}
MATH_PAGES = ["book/method.html", "notebooks/02_closed_form.html"]
PLOT_PAGES = ["notebooks/02_closed_form.html", "notebooks/04_eight_languages.html"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Milliseconds of virtual time Chromium grants the page scripts (MathJax) before it dumps or draws.
VIRTUAL_TIME_BUDGET_MS = 20000
CHROMIUM_TIMEOUT_S = 180

SCRIPT_TAG = re.compile(r"<script\b[^>]*>.*?</script>", re.IGNORECASE | re.DOTALL)
SCRIPT_SOURCE = re.compile(r"""<script\b[^>]*\bsrc=["']([^"']+)["']""", re.IGNORECASE)
IMAGE_SOURCE = re.compile(r"""<img\b[^>]*\bsrc=["']([^"']+)["']""", re.IGNORECASE)


def _chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _missing(reason: str) -> None:
    """Skip the test, or fail it when SWE_TOOLKIT_REQUIRE_BOOK=1 requires the book check."""
    if os.environ.get("SWE_TOOLKIT_REQUIRE_BOOK") == "1":
        pytest.fail(f"{reason} (SWE_TOOLKIT_REQUIRE_BOOK=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    if not (HTML / "index.html").is_file():
        _missing(f"{HTML} has no built book; run scripts/build_book.sh first")
    binary = _chromium_binary()
    if binary is None:
        _missing("no Chromium binary on PATH; install Debian's chromium package")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def site(chromium: str) -> Iterator[str]:
    """Serve _build/html on an ephemeral port of 127.0.0.1 and yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _run_chromium(binary: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
            *arguments,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False)


def _dump_dom(binary: str, url: str) -> str:
    result = _run_chromium(binary, "--dump-dom", url)
    assert result.returncode == 0, f"chromium --dump-dom {url} failed: {result.stderr[-2000:]}"
    return result.stdout


def test_built_pages_load_no_cdn_scripts(chromium: str) -> None:
    pages = sorted(HTML.rglob("*.html"))
    assert pages, f"no HTML pages under {HTML}"
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for source in SCRIPT_SOURCE.findall(text):
            assert not re.match(r"(https?:)?//", source), f"{page.relative_to(HTML)} loads a remote script: {source}"
        for tag in SCRIPT_TAG.findall(text):
            for marker in ("cdn.jsdelivr", "mathjax@", "unpkg.com"):
                assert marker not in tag, f"{page.relative_to(HTML)} has a script tag naming {marker}"


COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^\"'<>\s]*")


def test_colab_links_open_the_page_notebook(chromium: str) -> None:
    # Links exist only when the build found a GitHub repository (book/_ext/colab_repository.py).
    for page in sorted((HTML / "notebooks").glob("0*.html")):
        text = page.read_text(encoding="utf-8")
        assert "github.com/OWNER" not in text, f"{page.name} names the placeholder repository"
        for link in COLAB_LINK.findall(text):
            expected = rf"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/notebooks/{page.stem}\.ipynb"
            assert re.fullmatch(expected, link), f"{page.name} has a Colab link to {link}"


def test_mathjax_is_served_locally(chromium: str) -> None:
    page = (HTML / "book" / "method.html").read_text(encoding="utf-8")
    sources = [source for source in SCRIPT_SOURCE.findall(page) if "tex-mml-chtml.js" in source]
    assert sources, "book/method.html does not load MathJax"
    local = (HTML / "book" / sources[0].split("?")[0]).resolve()
    assert local.is_file(), f"MathJax script {local} is missing from the built site"


@pytest.mark.parametrize("page", MATH_PAGES)
def test_math_is_typeset(chromium: str, site: str, page: str) -> None:
    dom = _dump_dom(chromium, site + page)
    assert "<mjx-container" in dom, f"{page}: no mjx-container element, so MathJax did not typeset the math"
    assert "data-mjx-error" not in dom, f"{page}: MathJax reported an error in a formula"


@pytest.mark.parametrize("page", PLOT_PAGES)
def test_plots_are_png_images(chromium: str, site: str, page: str) -> None:
    dom = _dump_dom(chromium, site + page)
    sources = [source for source in IMAGE_SOURCE.findall(dom) if source.split("?")[0].endswith(".png")]
    assert sources, f"{page}: no PNG image in the rendered page"
    for source in sources:
        image = (HTML / page).parent / source.split("?")[0]
        assert image.is_file(), f"{page}: image {source} is missing"
        data = image.read_bytes()
        assert data.startswith(PNG_SIGNATURE), f"{page}: {source} is not a PNG file"
        assert len(data) > 1000, f"{page}: {source} has only {len(data)} bytes"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_screenshot(chromium: str, site: str, name: str) -> None:
    import matplotlib.image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    target.unlink(missing_ok=True)
    result = _run_chromium(chromium, f"--screenshot={target}", "--window-size=1280,1800", "--hide-scrollbars", site + PAGES[name])
    assert result.returncode == 0, f"chromium --screenshot failed for {PAGES[name]}: {result.stderr[-2000:]}"
    assert target.is_file(), f"chromium wrote no screenshot of {PAGES[name]}"
    pixels = matplotlib.image.imread(target)
    assert pixels.shape[0] == 1800, f"screenshot of {PAGES[name]} is {pixels.shape[0]} pixels high, expected 1800"
    assert pixels.shape[1] == 1280, f"screenshot of {PAGES[name]} is {pixels.shape[1]} pixels wide, expected 1280"
    assert float(pixels[..., :3].std()) > 0.01, f"the screenshot of {PAGES[name]} is blank"
