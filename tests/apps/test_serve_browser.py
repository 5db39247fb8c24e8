"""The web UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright; no browser download).

Each tab is run as a person would: type or upload, press the button, wait for the results,
and check that every image rendered (``naturalWidth > 0``). The page may only reach the
server on 127.0.0.1; any other request is aborted and reported.

Without Playwright or Chromium these tests skip with the reason, unless
``UNCLIP_REQUIRE_BROWSER=1`` (CI), where they fail. With ``UNCLIP_WRITE_SCREENSHOTS=1``
the server runs the shipped ``shapes`` model and a screenshot of each tab after its run is
written to docs/app/ (shown in docs/serve.md).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="the browser tests need httpx")

BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "app"
RENDERED = """sel => { const ims = [...document.querySelectorAll(sel)];
  return ims.length > 0 && ims.every(i => i.complete && i.naturalWidth > 0) ? ims.map(i => i.naturalWidth) : null; }"""


def expect(locator):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def _unavailable(reason: str) -> None:
    if os.environ.get("UNCLIP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (UNCLIP_REQUIRE_BROWSER=1 makes this a failure)")
    pytest.skip(reason)


def _chromium() -> str | None:
    for candidate in (
        os.environ.get("UNCLIP_CHROMIUM"),
        shutil.which("chromium"),
        "/usr/bin/chromium",
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright; the browser itself comes from apt)")
    path = _chromium()
    if path is None:
        _unavailable("no Chromium found (apt-get install chromium, or set UNCLIP_CHROMIUM to its path)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def uploads(live_server, tmp_path_factory) -> list[Path]:
    """Two pictures to upload, made by the server's own model (the first is 'a red circle')."""
    out = tmp_path_factory.mktemp("uploads")
    (size,) = [min(m["sizes"]) for m in httpx.get(f"{live_server.url}/api/models", timeout=30).json()["models"]]
    body = {"prompts": ["a red circle", "a blue square"], "num_images": 1, "size": size, "seed": 1}
    r = httpx.post(f"{live_server.url}/api/generate", json=body, timeout=600)
    assert r.status_code == 200, r.text
    paths = []
    for k, im in enumerate(r.json()["images"]):
        paths.append(out / f"upload{k}.png")
        paths[-1].write_bytes(base64.b64decode(im["png_base64"]))
    return paths


@pytest.fixture
def page(browser, live_server, screenshot_mode):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    blocked: list[str] = []

    def only_loopback(route):
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    pg.route("**/*", only_loopback)
    pg.set_default_timeout(600_000 if screenshot_mode else 120_000)
    pg.goto(live_server.url + "/", wait_until="domcontentloaded")
    pg.wait_for_selector("#gen-prompts textarea")
    pg.blocked = blocked
    yield pg
    context.close()
    assert not blocked, f"the page tried to leave the machine: {blocked}"


def _rendered(pg, selector: str) -> list[int]:
    """Wait until every image matching ``selector`` has loaded; their natural widths."""
    return pg.wait_for_function(RENDERED, arg=selector).json_value()


def _small_size(pg, tab: str, screenshot_mode: bool) -> None:
    """For the screenshots (shapes model) pick the decoder's 32 px, skipping the slow CPU upsampler."""
    if screenshot_mode:
        pg.click(f"#{tab}-size input")
        pg.get_by_role("option", name="32", exact=True).click()


def _shot(pg, name: str, screenshot_mode: bool) -> None:
    if screenshot_mode:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_text_to_image(page, screenshot_mode):
    page.fill("#gen-prompts textarea", "a red circle")
    _small_size(page, "gen", screenshot_mode)
    page.click("#gen-run")
    widths = _rendered(page, "#gen-gallery img")
    assert len(widths) == 4 and min(widths) > 0
    link = page.locator('#gen-files a[href$="/manifest.json"]')
    expect(link).to_be_visible()
    manifest = httpx.get(link.get_attribute("href"), timeout=30).json()  # the download is the job's manifest
    assert [(e["file"], e["prompt"]) for e in manifest["images"]] == [(f"00{k}.png", "a red circle") for k in range(4)]
    _shot(page, "generate", screenshot_mode)


def test_variations(page, uploads, screenshot_mode):
    page.get_by_role("tab", name="Variations").click()
    page.locator("#vary-image input[type=file]").set_input_files(str(uploads[0]))
    page.wait_for_selector("#vary-image img")
    _small_size(page, "vary", screenshot_mode)
    page.click("#vary-run")
    assert min(_rendered(page, "#vary-gallery img")) > 0
    assert min(_rendered(page, "#vary-recon img")) > 0  # the eta-0 reconstruction beside them
    expect(page.locator('#vary-files a[href$="/latent.safetensors"]')).to_be_visible()
    _shot(page, "vary", screenshot_mode)


def test_interpolation(page, uploads, screenshot_mode):
    page.get_by_role("tab", name="Interpolation").click()
    page.locator("#interp-a input[type=file]").set_input_files(str(uploads[0]))
    page.locator("#interp-b input[type=file]").set_input_files(str(uploads[1]))
    page.wait_for_selector("#interp-b img")
    _small_size(page, "interp", screenshot_mode)
    page.click("#interp-run")
    assert min(_rendered(page, "#interp-gallery img")) > 0
    expect(page.locator('#interp-files a[href$="/latent_b.safetensors"]')).to_be_visible()
    _shot(page, "interpolate", screenshot_mode)


def test_text_diff(page, uploads, screenshot_mode):
    page.get_by_role("tab", name="Text diff").click()
    page.locator("#diff-image input[type=file]").set_input_files(str(uploads[0]))
    page.wait_for_selector("#diff-image img")
    page.fill("#diff-to textarea", "a blue circle")
    _small_size(page, "diff", screenshot_mode)
    page.click("#diff-run")
    assert min(_rendered(page, "#diff-gallery img")) > 0
    _shot(page, "textdiff", screenshot_mode)


def test_errors_are_shown_naming_the_field(page):
    page.get_by_role("tab", name="Variations").click()
    page.click("#vary-run")  # nothing uploaded
    expect(page.get_by_text("image: upload an image first").first).to_be_visible()
