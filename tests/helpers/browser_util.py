"""Headless Debian chromium through Playwright, for tests/course/test_slides.py and tests/browser/test_browser.py.

Playwright never downloads a browser here: it drives /usr/bin/chromium (``make sysdeps``).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """Skip the calling test when chromium or Playwright is missing (``make sysdeps``)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make sysdeps` installs it")
    pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def chromium_browser():
    """One headless chromium for many :func:`chromium_context` calls (``browser=``): a new
    context in a running browser takes a fraction of a second, a browser start seconds.

    Playwright's sync API marks the thread's asyncio loop as running while it is started, so
    hold one only where no other code of the thread runs an asyncio loop meanwhile (a module's
    browser checks, not across the whole session)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def chromium_context(browser=None, **kwargs):
    """A fresh headless chromium (own, temporary user-data-dir); yields a BrowserContext.
    ``browser``: a running :func:`chromium_browser` to open the context in instead (a fresh,
    isolated context too: no cookies, storage or cache of another)."""
    kwargs.setdefault("viewport", {"width": 1280, "height": 900})
    if browser is not None:
        context = browser.new_context(**kwargs)
        try:
            yield context
        finally:
            context.close()
        return

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="vmkit-chromium-") as profile, \
            sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            **kwargs,
        )
        try:
            yield context
        finally:
            context.close()


def local_only(context, base: str, network: list) -> None:
    """Let ``context`` reach only the server at ``base`` (and data:/blob: URLs); every other
    request is aborted and its URL appended to ``network`` (a page that fetches from outside,
    news or CDNs, would hang offline or leak, and the test says which URL it was)."""
    local = (base + "/", "data:", "blob:")

    def route(r):
        if r.request.url.startswith(local):
            r.continue_()
        else:
            network.append(r.request.url)
            r.abort()

    context.route("**/*", route)


def screenshot(page, name: str) -> Path | None:
    """Save a full-page screenshot as build/test-artifacts/<name>.png; never raises."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    try:
        page.screenshot(path=str(path), full_page=True)
    except Exception:  # the page may be gone; the screenshot is a courtesy
        return None
    return path
