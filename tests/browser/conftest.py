"""Fixtures of the browser tests: Debian's Chromium driven by playwright.

When Chromium or playwright is missing, ``scripts/install-browser.sh``
installs it (Chromium with apt-get, so as root). Each page records its
console errors and uncaught exceptions, and tests save screenshots under
``tests/artifacts/``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _playwright_installed() -> bool:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists() or not _playwright_installed():
        script = ROOT / "scripts" / "install-browser.sh"
        result = subprocess.run(
            ["bash", str(script), sys.executable], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.fail(f"{script} failed with {result.returncode}:\n{result.stderr[-2000:]}")
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium_path):
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@dataclass
class BrowserPage:
    """A page in its own browser context, with what it reported to the console."""

    page: object
    errors: list[str] = field(default_factory=list)

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
async def open_page(browser):
    """Return a function that opens a URL in a new context and records console errors."""
    contexts = []

    async def open_url(url: str) -> BrowserPage:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(15_000)
        result = BrowserPage(page)
        page.on(
            "console",
            lambda message: result.errors.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: result.errors.append(f"uncaught: {error}"))
        await page.goto(url)
        await page.wait_for_selector("body[data-ready='1']")
        return result

    yield open_url
    for context in contexts:
        await context.close()
