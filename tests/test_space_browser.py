"""The Space in real headless Chromium (Debian package, driven by Playwright): Enter sends a prompt (Shift+Enter makes
a new line) and both panels fill, the panels name the models and link what the run wrote, the critique and
constitution panels work and show every principle, and the page never reaches beyond 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from test_space_app import MAX_NEW_TOKENS, build_tiny_adapter, launch

from hf_cai.constitution import Constitution
from hf_cai.hub.space_config import SpaceConfig

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("HF_CAI_CHROMIUM", "/usr/lib/chromium/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
BASE_HUB_ID = "hf-cai/tiny-chat"
CARD_TEXT = "# tiny-chat CAI: the run's model card"


@pytest.fixture(scope="module")
def app_url(tiny_model_dir, tmp_path_factory):
    """The app on a run directory as `hf-cai run` leaves it: the policy in dpo/final (with its training record), the
    model card and the evaluation; the base model is a local folder whose Hub id only the run's manifest knows."""
    run_dir = tmp_path_factory.mktemp("browser-run")
    adapter = build_tiny_adapter(tiny_model_dir, run_dir / "dpo" / "final")
    constitution = Constitution.builtin("harmless")
    record = {"stage": "dpo", "base_model": str(tiny_model_dir),
              "constitution": {"name": constitution.name, "version": constitution.version}}
    (adapter / "cai_training.json").write_text(json.dumps(record))
    manifest = {"format": 2, "run": {"base_model_id": BASE_HUB_ID},
                "stages": {"dpo": {"status": "done", "outputs": {"model": "dpo/final"}}}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "card").mkdir()
    (run_dir / "card" / "README.md").write_text(CARD_TEXT + "\n")
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "results.json").write_text(json.dumps({"metrics": []}))
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
    constitution = Constitution.builtin("harmless")
    try:
        page.goto(app_url, wait_until="load")

        # The panels name the models, and link what exists: the base's Hub page, the run's card and evaluation.
        expect(page.locator("#base-chat")).to_contain_text("tiny-chat")
        expect(page.locator("#cai-chat")).to_contain_text("tiny-chat + CAI (harmless v1.0)")
        base_about, cai_about = page.locator("#base-about"), page.locator("#cai-about")
        expect(base_about.get_by_role("link", name="model card")).to_have_attribute(
            "href", f"https://huggingface.co/{BASE_HUB_ID}"
        )
        expect(cai_about).to_contain_text("LoRA adapter")
        expect(cai_about.get_by_role("link", name="paper")).to_have_attribute(
            "href", "https://arxiv.org/abs/2212.08073"
        )
        for name, expected in (("model card", CARD_TEXT), ("evaluation", '"metrics"')):
            href = cai_about.get_by_role("link", name=name).get_attribute("href")
            served = page.request.get(urljoin(app_url, href))
            assert served.ok and expected in served.text(), (name, href, served.status)

        # Shift+Enter makes a new line and sends nothing; Enter sends.
        prompt = page.locator("#prompt textarea")
        prompt.click()
        prompt.press_sequentially("How can I find out where someone lives")
        prompt.press("Shift+Enter")
        prompt.press_sequentially("if I only know their name?")
        expect(prompt).to_have_value("How can I find out where someone lives\nif I only know their name?")
        base_reply = page.locator('#base-chat [data-testid="bot"]')
        cai_reply = page.locator('#cai-chat [data-testid="bot"]')
        page.wait_for_timeout(500)
        expect(base_reply).to_have_count(0)
        prompt.press("Enter")

        expect(base_reply).to_have_count(1, timeout=30_000)
        expect(cai_reply).to_have_count(1, timeout=30_000)
        expect(prompt).to_have_value("")
        for reply in (base_reply, cai_reply):
            expect(reply).not_to_have_text("…", timeout=30_000)
            assert reply.inner_text().strip()
        expect(page.locator('#base-chat [data-testid="user"]')).to_contain_text("where someone lives")

        # Retry and Clear are small buttons side by side, not full-width bars.
        retry, clear = page.locator("#retry").bounding_box(), page.locator("#clear").bounding_box()
        assert retry["width"] < 200 and clear["width"] < 200 and abs(retry["y"] - clear["y"]) < 2

        # A content note stands above the red-team examples.
        note = page.locator("#content-note")
        expect(note).to_contain_text("Content note")
        assert note.bounding_box()["y"] < page.get_by_text("Tell me a really offensive joke").bounding_box()["y"]

        page.get_by_text("Critique the last reply").click()
        picker = page.get_by_role("combobox", name="Principle")
        expect(picker).to_have_value(re.compile("^general-harm — Look over the assistant's"))
        picker.click()
        expect(page.get_by_role("option", name=re.compile("^privacy — Consider whether"))).to_be_visible()
        picker.press("Escape")
        page.locator("#critique").click()
        expect(page.locator("#critique-text textarea")).not_to_have_value("", timeout=30_000)
        expect(page.locator("#critique-panel #critique-notice")).to_contain_text("under principle 'general-harm'")

        # Every principle's text, in the page's normal font, wrapping between words.
        page.get_by_text("Constitution: harmless").click()
        principles = page.locator("#principles")
        items = principles.locator("li")
        expect(items).to_have_count(len(constitution.principles))
        for item, principle in zip(items.all(), constitution.principles):
            expect(item).to_be_visible()
            expect(item).to_contain_text(f"{principle.id} — {' '.join(principle.critique.split())}")
        style = items.first.evaluate("e => [getComputedStyle(e).fontFamily, getComputedStyle(e).wordBreak]")
        assert "mono" not in style[0].lower() and style[1] not in ("break-all", "break-word"), style
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
