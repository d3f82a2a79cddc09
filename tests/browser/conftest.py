"""Real-browser fixtures: the explorer on the default model, driven by Debian's chromium.

The tests skip only when chromium (or playwright) is genuinely absent and CI is unset; in CI that fails.
Set MEDUSA_SCREENSHOTS=docs to refresh the README screenshots while the tests run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

try:
    import gradio  # noqa: F401
    import playwright.sync_api as playwright_api
except ImportError:
    if os.environ.get("CI"):
        raise  # CI must run the browser tests
    pytest.skip("gradio or playwright is not installed", allow_module_level=True)

CHROMIUM = Path(os.environ.get("MEDUSA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
VIEWPORT = {"width": 1400, "height": 1000}


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if os.environ.get("CI"):
        pytest.fail(f"chromium not found at {CHROMIUM}; CI must run the browser tests (bash scripts/setup.sh --browser)")
    pytest.skip(f"chromium not found at {CHROMIUM} (install it with bash scripts/setup.sh --browser)")


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    from app import ModelStore, build_app, launch_kwargs, load_key

    store = ModelStore(load_key)
    store.get()
    demo = build_app(store=store)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield url
    demo.close()


@pytest.fixture(scope="session")
def browser():
    require_chromium()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh page (a fresh Gradio session) on the explorer, with the model loaded."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url)
    page.wait_for_selector("#model-status:has-text('Loaded')")
    yield page
    context.close()


@pytest.fixture
def screenshot():
    """screenshot(page, name): into MEDUSA_SCREENSHOTS (e.g. docs/) when set, else nowhere."""
    folder = os.environ.get("MEDUSA_SCREENSHOTS")

    class Screenshot:
        enabled = bool(folder)

        def __call__(self, page, name: str, selector: str | None = None) -> None:
            """The whole page, or only the element `selector` (a view inside a long page)."""
            if folder:
                page.mouse.move(0, 0)  # no hover labels or plot toolbars in the picture
                Path(folder).mkdir(parents=True, exist_ok=True)
                path = str(Path(folder) / f"{name}.png")
                if selector:
                    page.locator(selector).first.screenshot(path=path)
                else:
                    page.screenshot(path=path, full_page=True)

    return Screenshot()
