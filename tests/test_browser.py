"""Section 8, UI pages, in a real browser: Playwright drives the system Chromium against the app running as a
process (the `start_app` fixture) with the fake upstream. It logs in, adds a channel, tests it, and finds the call
in /logs. Screenshots go to /tmp/ui-shots/ for a human look.

Skipped only when Chromium is missing and `CI` is unset; `.ci/run` installs Chromium.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed (apt install chromium)", allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

SHOTS = Path("/tmp/ui-shots")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Pretend to be on plain http://ip:port, where navigator.clipboard is refused, to exercise the copy fallback.
PLAIN_HTTP = "Object.defineProperty(window, 'isSecureContext', {get: () => false});"


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(400)  # let dialogs finish fading in
    page.screenshot(path=str(SHOTS / f"browser-{name}.png"), full_page=True)


def test_log_in_add_a_channel_test_it_and_find_the_call(start_app, upstream) -> None:
    server = start_app()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-US",
                                      timezone_id="Asia/Shanghai")
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        context.add_init_script(PLAIN_HTTP)
        page = context.new_page()
        page.set_default_timeout(15_000)

        page.goto(server.url + "/channels")  # no session: the login page, not the data
        expect(page.get_by_text("Log in with the admin key")).to_be_visible()
        shot(page, "1-login")
        page.get_by_label("Admin key").fill(server.admin_key)
        page.keyboard.press("Enter")
        expect(page.get_by_text("No channels yet")).to_be_visible()
        assert page.url.endswith("/channels") and server.admin_key not in page.url

        page.get_by_role("button", name="Add channel").click()
        dialog = page.locator(".q-dialog")
        dialog.get_by_label("Name").fill("browser channel")
        dialog.get_by_label("Models").click()
        page.keyboard.type("my-custom-model")  # a model the provider does not list: typed + Enter
        page.keyboard.press("Enter")
        dialog.get_by_text("Add channel").click()  # a click outside closes the option list
        dialog.get_by_label("Base URL (optional)").fill(upstream.url("ok"))
        dialog.get_by_label("API key").fill("sk-browser-test-key")
        expect(dialog.get_by_text("my-custom-model")).to_be_visible()
        shot(page, "2-add-channel")
        dialog.get_by_role("button", name="Save").click()
        row = page.locator("tr", has_text="browser channel")
        expect(row).to_be_visible()
        expect(row).to_contain_text("sk-br…ey")  # masked
        expect(row).not_to_contain_text("sk-browser-test-key")

        row.locator("button:has(i:text-is('speed'))").click()
        expect(page.get_by_text("Model test: browser channel")).to_be_visible()
        page.get_by_role("button", name="Start test").click()
        expect(page.get_by_text("Test finished: 1 passed, 0 failed")).to_be_visible()
        expect(page.get_by_text(re.compile(r"^\d+\.\d\d s$")).first).to_be_visible()
        expect(page.get_by_text("HTTP 200")).to_be_visible()
        shot(page, "3-model-test")
        page.locator(".q-dialog").get_by_role("button", name="Close").click()
        expect(row).to_contain_text("✓")

        deadline = time.monotonic() + 10  # the log writer flushes every half second
        while server.api("GET", "/api/logs/")["data"]["total"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        page.get_by_role("link", name="Call logs").click()
        expect(page.get_by_text("1 call(s)")).to_be_visible()
        log_row = page.locator("tbody tr", has_text="my-custom-model")
        expect(log_row).to_contain_text("browser channel")
        expect(log_row).to_contain_text("200")
        shot(page, "4-logs")
        log_row.click()
        expect(page.get_by_text("Call details")).to_be_visible()
        shot(page, "5-log-detail")
        page.keyboard.press("Escape")

        page.get_by_role("link", name="Settings").click()
        expect(page.get_by_text("Connect your apps")).to_be_visible()
        assert server.admin_key not in page.content()  # masked until revealed
        page.locator(".code-block").get_by_role("button", name="Copy").click()
        expect(page.get_by_text("Copied to the clipboard")).to_be_visible()  # via execCommand on "plain http"
        assert f"AIPROXY_API_TOKEN={server.admin_key}" in page.evaluate("navigator.clipboard.readText()")
        shot(page, "6-settings")

        page.get_by_role("button", name="中文").click()
        expect(page.get_by_text("接入应用")).to_be_visible()
        page.get_by_role("button", name="Log out").or_(page.get_by_role("button", name="退出登录")).click()
        expect(page.get_by_text("使用管理员密钥登录")).to_be_visible()
        browser.close()
