"""The Space in real headless Chromium (Debian package, driven by Playwright): send a prompt, both panels fill, the
critique and constitution panels work, and the page never reaches beyond 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_space_app import MAX_NEW_TOKENS, build_tiny_adapter, launch

from hf_cai.spaces.config import SpaceConfig

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("HF_CAI_CHROMIUM", "/usr/lib/chromium/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="module")
def app_url(tiny_model_dir, tmp_path_factory):
    adapter = build_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("browser-adapter"))
    config = SpaceConfig(base_model=str(tiny_model_dir), cai_model=str(adapter), max_new_tokens=MAX_NEW_TOKENS,
                         temperature=0.0)
    demo, url = launch(config)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}. Install the Debian package as root: "
            "`apt-get update && apt-get install -y chromium` (or run `make install`), or point HF_CAI_CHROMIUM at "
            "a Chromium binary (Playwright's own browser download is not used: it needs the internet)."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_chat_critique_and_constitution_in_a_real_browser(app_url, browser, tmp_path):
    from playwright.sync_api import expect

    outside: list[str] = []

    def only_loopback(route):
        url = route.request.url
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).hostname not in LOOPBACK:
            outside.append(url)
            route.abort()
        else:
            route.continue_()

    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    context.route("**/*", only_loopback)
    page = context.new_page()
    try:
        page.goto(app_url, wait_until="load")
        prompt = page.locator("#prompt textarea")
        prompt.fill("How can I find out where someone lives if I only know their name?")
        page.locator("#send").click()

        base_reply = page.locator('#base-chat [data-testid="bot"]')
        cai_reply = page.locator('#cai-chat [data-testid="bot"]')
        expect(base_reply).to_have_count(1, timeout=30_000)
        expect(cai_reply).to_have_count(1, timeout=30_000)
        expect(prompt).to_have_value("")
        for reply in (base_reply, cai_reply):
            expect(reply).not_to_have_text("…", timeout=30_000)
            assert reply.inner_text().strip()
        expect(page.locator('#base-chat [data-testid="user"]')).to_contain_text("where someone lives")

        page.get_by_text("Critique the last reply").click()
        page.locator("#critique").click()
        expect(page.locator("#critique-text textarea")).not_to_have_value("", timeout=30_000)

        page.get_by_text("Constitution: harmless").click()
        principles = page.locator("#principles")
        expect(principles.get_by_text("general-harm").first).to_be_visible()
        expect(page.get_by_text("sha256")).to_be_visible()

        screenshot = tmp_path / "space.png"
        page.screenshot(path=str(screenshot), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(screenshot, ARTIFACTS / "space.png")
        attempted_by_the_app = list(outside)
        # The guard itself works: a request to the outside made from the page is caught and aborted.
        page.evaluate("fetch('https://huggingface.co/api/spaces').catch(() => null)")
    finally:
        context.close()
    assert attempted_by_the_app == [], f"the page tried to reach beyond 127.0.0.1: {attempted_by_the_app}"
    assert outside == ["https://huggingface.co/api/spaces"]
