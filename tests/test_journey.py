"""UI pages; Migrate wizard: in a real browser, the journey of FastGPT's AI Proxy doc, by clicking and typing only.

Playwright drives the system Chromium against the app running as a process (`start_app`) with the fake upstream.
The six steps of the doc: log in, create a channel (provider, models, mapping, base URL, key), test it, look at
its models, point FastGPT at the gateway (copy the snippet), and read the call logs (then the dashboard). The
walk runs twice, in English at 1440 px in the light theme (clipboard API) and in Chinese at 390 px in the dark
theme (plain http://ip:port, so copying falls back to execCommand), and checks along the way that the defects of
issue 11 stay gone: copies hold the whole key, the picker finds 阿里云百炼 by 阿里/通义/qwen, failures are sentences,
the phone layout keeps every control on screen and nothing overlaps, tests are marked and not counted, 中文 has no
English left from Quasar, and every text and icon meets WCAG AA contrast in its theme (measured from computed
styles). Strings come from assets/i18n.json and providers.json, so each check reads in the walk's language.
And that issue 19's stay gone: the Models field keeps what was chosen when a typed name + Enter meets an option
under the pointer; every page at 390 px has no text squeezed to a letter or two a line and nothing that scrolls
sideways; the channel list at 1440 px keeps its actions on screen with a long auto-disable reason; after calls that
failed over, the dashboard's totals equal the logs' and the trail names the channels; the provider picker puts an
exact name first; the first visit follows the system's theme; the Get-started steps are numbered once; toasts name
the channel; the 中文 reason is in Chinese; API keys can be edited.
Screenshots and page-open timings go to /tmp/ui-shots/.

Skipped only when Chromium is missing and `CI` is unset.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from health_upstream import HealthUpstream

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed (apt install chromium)", allow_module_level=True)

from playwright.sync_api import Locator, Page, expect, sync_playwright  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STRINGS = json.loads((ROOT / "assets" / "i18n.json").read_text(encoding="utf-8"))
PROVIDERS = json.loads((ROOT / "assets" / "providers.json").read_text(encoding="utf-8"))
SHOTS = Path("/tmp/ui-shots")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-extensions"]
PLAIN_HTTP = "Object.defineProperty(window, 'isSecureContext', {get: () => false});"  # as on http://ip:port
LONG_MODEL = "an-unusually-long-deployment-name-that-a-narrow-test-panel-used-to-cut-off-v2"
LONG_REASON = ("Incorrect API key provided: {key}. You can find your API key at "
               "https://platform.openai.com/account/api-keys/organization/project/settings/keys-and-limits.")
FAILOVERS = 3  # calls per walk that fail over from the keyless channel

# Every visible text and icon against the background it is painted on: backgrounds composited from the root
# down, colours faded by every ancestor's opacity. AA: 4.5:1 for text (3:1 when large), 3:1 for icons.
CONTRAST_JS = """() => {
  const parse = (c) => { const m = c && c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = (el) => { const chain = []; for (let e = el; e; e = e.parentElement) chain.unshift(e);
    let bg = [255, 255, 255, 1];
    for (const e of chain) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) bg = over(c, bg);
    }
    return bg; };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
    return o; };
  const failures = [];
  for (const el of document.querySelectorAll('body *')) {
    const box = el.getBoundingClientRect(), style = getComputedStyle(el);
    if (!box.width || !box.height || style.visibility === 'hidden') continue;
    if (['SCRIPT', 'STYLE'].includes(el.tagName)) continue;
    if (el.closest('[disabled], .disabled, [aria-disabled="true"], .q-field--disabled') || opacity(el) === 0) continue;
    if (el.matches('.q-select__focus-target')) continue;  // an invisible focus helper
    const icon = el.matches('i.q-icon');
    const text = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    const field = el.matches('input:not([type=checkbox]):not([type=radio]):not([type=file]), textarea') && el.value;
    if (!icon && !text && !field) continue;
    const fg = parse(style.color), bg = background(el);
    const r = ratio(over([fg[0], fg[1], fg[2], fg[3] * opacity(el)], bg), bg);
    const size = parseFloat(style.fontSize), large = size >= 24 || (parseInt(style.fontWeight) >= 700 && size >= 18.66);
    const need = icon || large ? 3 : 4.5;
    if (r + 0.005 < need) failures.push(`${(field ? el.value : el.textContent).trim().slice(0, 40)} ` +
                                        `(${r.toFixed(2)} < ${need}, .${String(el.className).slice(0, 60)})`);
  }
  return [...new Set(failures)];
}"""

# No transition running (spinners, which never end, aside): toasts and dialogs have their final colours.
SETTLED_JS = "() => document.getAnimations().every(a => a.playState !== 'running' || " \
             "a.effect.getComputedTiming().iterations === Infinity)"

# Visible elements past the window's right edge, except inside a container that scrolls sideways on purpose.
OFF_SCREEN_JS = """() => [...document.querySelectorAll('body *')].filter(e => {
    const r = e.getBoundingClientRect();
    if (!r.width || !r.height || r.right <= window.innerWidth + 1) return false;
    for (let p = e.parentElement; p; p = p.parentElement)
      if (['auto', 'scroll'].includes(getComputedStyle(p).overflowX)) return false;
    return true;
  }).map(e => (e.textContent.trim() || e.className).slice(0, 40)).slice(0, 5)"""

# Text squeezed to a letter or two a line ("ER/NI/E-/Bo/t"): a visible text of 6+ characters on 3+ lines with
# fewer than 4 characters a line on average.
SQUEEZED_JS = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent.trim();
    if (text.length < 6 || !n.parentElement || !n.parentElement.getClientRects().length) continue;
    const range = document.createRange(); range.selectNodeContents(n);
    const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
    if (tops.size >= 3 && text.length / tops.size < 4) out.push(`${text.slice(0, 30)} (${tops.size} lines)`);
  }
  return out.slice(0, 5);
}"""

# Anything that scrolls sideways: the page itself, or a box whose content is wider than it (code aside).
SIDEWAYS_JS = """() => {
  const out = [];
  if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push('the page');
  for (const e of document.querySelectorAll('body *')) {
    const x = getComputedStyle(e).overflowX;
    if (!['auto', 'scroll'].includes(x) || !e.clientWidth || e.closest('pre, .nicegui-code')) continue;
    if (e.scrollWidth > e.clientWidth + 1) out.push(`${String(e.className).slice(0, 50)} ${e.scrollWidth}>${e.clientWidth}`);
  }
  return out;
}"""

# Direct children of a dialog's card that overlap one another (a wrapped hint over the button below it).
OVERLAPS_JS = """(card) => {
  const boxes = [...card.querySelectorAll(':scope > *')].map(e => [e, e.getBoundingClientRect()])
    .filter(([, b]) => b.height > 0 && b.width > 0);
  const out = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [a, b] = [boxes[i][1], boxes[j][1]];
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
      out.push(`${boxes[i][0].textContent.trim().slice(0, 30)} / ${boxes[j][0].textContent.trim().slice(0, 30)}`);
  }
  return out;
}"""


class Walk:
    """One walk through the doc's steps in one language, width and theme; `say(key)` is the UI's own string."""

    def __init__(self, page: Page, server: Any, upstream: Any, lang: str, phone: bool, dark: bool) -> None:
        self.page, self.server, self.upstream = page, server, upstream
        self.lang, self.phone, self.dark = lang, phone, dark
        self.name = f"{'phone' if phone else 'desk'}-{lang}{'-dark' if dark else ''}"
        self.timings: dict[str, float] = {}

    def say(self, key: str, **values: Any) -> str:
        text = STRINGS[self.lang][key]
        return text.format(**values) if values else text

    def shot(self, step: str) -> None:
        self.page.wait_for_timeout(250)  # dialogs and toasts finish fading in
        self.page.screenshot(path=str(SHOTS / f"{self.name}-{step}.png"), full_page=True)

    def check_page(self) -> None:
        """On every screen: AA contrast; at 390 px nothing wider than the window, nothing scrolling sideways and
        no text squeezed to a letter or two a line."""
        self.page.wait_for_function(SETTLED_JS, timeout=5000)  # colours mid-fade are no colours to judge
        failures = self.page.evaluate(CONTRAST_JS)
        assert not failures, f"{self.name} {self.page.url}: contrast below AA: {failures}"
        if self.phone:
            sticking_out = self.page.evaluate(OFF_SCREEN_JS)
            assert not sticking_out, f"{self.name} {self.page.url}: past the phone's right edge: {sticking_out}"
            sideways = self.page.evaluate(SIDEWAYS_JS)
            assert not sideways, f"{self.name} {self.page.url}: scrolls sideways at 390 px: {sideways}"
            squeezed = self.page.evaluate(SQUEEZED_JS)
            assert not squeezed, f"{self.name} {self.page.url}: text squeezed a letter a line: {squeezed}"

    def open(self, nav_key: str, ready: str) -> None:
        """Open a page from the navigation (the drawer is a menu on the phone) and time it until `ready` shows."""
        if self.phone:
            self.page.locator("header button:has(i:text-is('menu'))").click()
        started = time.monotonic()
        self.page.get_by_role("link", name=self.say(nav_key)).click()
        expect(self.page.get_by_text(ready).first).to_be_visible()
        self.timings[nav_key] = round(time.monotonic() - started, 2)
        try:  # a quiet network: the page's assets are in (on a loaded 2-core box it may never be quiet for 0.5 s)
            self.page.wait_for_load_state("networkidle", timeout=5000)
        except PlaywrightTimeout:
            pass  # `ready` is on screen already; every check after this waits for what it looks at

    def row(self, name: str) -> Locator:
        """A channel's row, or its card on a phone."""
        return self.page.locator(".q-card" if self.phone else "tbody tr", has_text=name).first

    # ---- the doc's steps ----

    def log_in(self) -> None:
        page = self.page
        page.goto(self.server.url + "/dashboard")  # no session: the login page, not the data
        expect(page.get_by_text(self.say("login.title"))).to_be_visible()
        # the first visit follows the system's theme (the context's color_scheme)
        expect(page.locator("body.body--dark")).to_have_count(1 if self.dark else 0)
        self.check_page()
        page.get_by_label(self.say("login.key")).fill(self.server.admin_key)
        page.keyboard.press("Enter")
        expect(page.get_by_text(self.say("dash.chart_calls"))).to_be_visible()  # on the dashboard
        start = page.locator(".q-card", has_text=self.say("dash.start_title"))
        if self.lang == "en":  # no channel yet (the walks share one server): the Get-started card
            expect(start).to_contain_text(self.say("dash.start_3"))
            text = start.inner_text()
            assert not re.search(r"(\d)\s*\1\.", text), f"steps numbered twice: {text!r}"
        expect(page.locator("body.body--dark")).to_have_count(1 if self.dark else 0)  # still, once logged in
        self.check_page()
        self.open("nav.channels", self.say("ch.add"))
        assert page.url.endswith("/channels") and self.server.admin_key not in page.url

    def add_channel(self, name: str) -> None:
        page, say = self.page, self.say
        page.get_by_role("button", name=say("ch.add"), exact=True).click()
        dialog = page.locator(".q-dialog")
        bailian = PROVIDERS["17"]["display"][self.lang]
        picker = dialog.get_by_label(say("ch.provider"))
        for needle in ("阿里", "通义", "qwen"):  # either name, or a model: each finds 阿里云百炼
            picker.click()
            picker.press("Control+a")
            picker.press_sequentially(needle)
            expect(page.locator(".q-menu .q-item").first).to_contain_text(bailian)
        picker.press("Control+a")
        openai = PROVIDERS["1"]["display"][self.lang]
        picker.press_sequentially(openai)  # an exact name comes first (not Azure OpenAI)
        expect(page.locator(".q-menu .q-item").first.locator(".q-item__label").first).to_have_text(openai)
        picker.press("Control+a")
        picker.press_sequentially("no-such-provider")
        expect(page.locator(".q-menu")).to_contain_text(say("ch.no_match"))
        picker.press("Control+a")
        picker.press_sequentially("bailian")
        page.locator(".q-menu .q-item", has_text=bailian).click()
        expect(picker).to_have_value(bailian)  # the name, not "ali (17)"
        expect(dialog.get_by_text(PROVIDERS["17"]["help"][self.lang]["key"])).to_be_visible()
        name_box = dialog.get_by_label(say("ch.name"), exact=True)
        name_box.fill(name)
        models = dialog.get_by_label(say("ch.models"), exact=True)
        models.click()
        # a person types once the model field has the cursor (on a phone its option list opens first); so here
        page.wait_for_function("box => document.activeElement !== box && document.activeElement.tagName === 'INPUT'",
                               arg=name_box.element_handle())
        for model in ("qwen-max", LONG_MODEL):  # a built-in one and a custom one: typed + Enter
            page.keyboard.type(model)
            page.keyboard.press("Enter")
            # the chip in this field, as a person sees it before typing on (the page behind has the first walk's
            # chips). The field shows a value once the server echoes it: an Enter before that echo starts from the
            # old value and drops the model typed before it, which lost qwen-max on a loaded CI box
            expect(dialog.locator(".q-chip", has_text=model).first).to_be_attached()
        dialog.locator(".text-xl").first.click()  # a click outside closes the option list
        dialog.get_by_text(say("ch.mapping")).click()
        add = dialog.get_by_role("button", name=say("ch.mapping_add"), exact=True)
        expect(add).to_be_visible()
        page.wait_for_function(SETTLED_JS, timeout=5000)  # the panel has slid open: the button stays put
        add.click()
        dialog.get_by_label(say("ch.map_from")).fill("gpt-4o")
        dialog.get_by_label(say("ch.map_to")).fill("qwen-max")
        dialog.get_by_label(say("ch.base_url")).fill(self.upstream.url("ok"))
        dialog.get_by_label(say("ch.key")).fill("sk-journey-secret-key-0001")
        overlaps = dialog.locator(".q-card").evaluate(OVERLAPS_JS)
        assert not overlaps, f"{self.name}: the form's parts overlap: {overlaps}"
        self.check_page()
        self.shot("2-add-channel")
        dialog.get_by_role("button", name=say("common.save"), exact=True).click()
        row = self.row(name)
        expect(row).to_contain_text("sk-jo…01")  # masked
        expect(row).not_to_contain_text("sk-journey-secret-key-0001")
        expect(row).to_contain_text("gpt-4o → qwen-max")  # a mapped name, not a served model
        long_chip = row.locator(".model-chip .q-chip__content", has_text=LONG_MODEL)
        assert long_chip.evaluate("e => e.scrollWidth <= e.clientWidth"), "a long model name is cut in its chip"
        if self.phone:  # the card keeps the switch, the priority and the actions on screen
            for part in (row.locator(".q-toggle"), row.locator("input[type=number]"),
                         row.locator("button:has(i:text-is('delete'))")):
                box = part.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (self.name, box)

    def add_dead_channel(self, name: str, port: int) -> None:
        page, say = self.page, self.say
        page.get_by_role("button", name=say("ch.add"), exact=True).click()
        dialog = page.locator(".q-dialog")
        dialog.get_by_label(say("ch.name"), exact=True).fill(name)
        dialog.get_by_label(say("ch.models"), exact=True).click()
        page.keyboard.type("dead-model-long")
        page.keyboard.press("Enter")
        # typing a shorter name while the pointer rests on the chosen one's option (where the list opened under
        # it): Enter adds what was typed and keeps what was chosen (issue 19: it cleared every chosen model)
        page.keyboard.type("dead-model")
        page.locator(".q-menu .q-item", has_text="dead-model-long").hover()
        page.keyboard.press("Enter")
        chips = dialog.locator(".q-chip .q-chip__content")
        expect(chips).to_have_count(2)
        assert sorted(c.strip() for c in chips.all_inner_texts()) == ["dead-model", "dead-model-long"]
        dialog.locator(".text-xl").first.click()
        dialog.get_by_label(say("ch.base_url")).fill(f"http://127.0.0.1:{port}/v1")
        dialog.get_by_label(say("ch.key")).fill("sk-dead")
        dialog.get_by_role("button", name=say("common.save"), exact=True).click()
        expect(self.row(name)).to_be_visible()

    def test_channel(self, name: str, passed: int, failed: int) -> Locator:
        page = self.page
        self.row(name).locator("button:has(i:text-is('speed'))").click()
        panel = page.locator(".q-dialog", has_text=self.say("test.title", name=name))
        panel.get_by_role("button", name=self.say("test.start"), exact=True).click()
        expect(page.get_by_text(self.say("test.summary", ok=passed, failed=failed))).to_be_visible()
        return panel

    def test_channels(self, good: str, dead: str, port: int) -> None:
        panel = self.test_channel(good, passed=3, failed=0)
        long_name = panel.get_by_text(LONG_MODEL, exact=True)
        assert long_name.evaluate("e => e.scrollWidth <= e.clientWidth"), "the test panel cuts a long name"
        self.check_page()
        self.shot("3-model-test")
        panel.get_by_role("button", name=self.say("common.close"), exact=True).click()
        panel = self.test_channel(dead, passed=0, failed=2)
        sentence = panel.get_by_text(re.compile(rf"127\.0\.0\.1:{port}")).first  # where it could not connect
        expect(sentence).to_be_visible()
        assert "{" not in sentence.inner_text()  # words; the raw JSON waits behind Details
        expect(panel).to_contain_text(self.say("test.check_base_url"))
        self.check_page()
        panel.get_by_role("button", name=self.say("common.close"), exact=True).click()

    def models(self) -> None:
        self.open("nav.models", "qwen-max")
        row = self.page.locator(".q-table tbody tr", has_text="qwen-max").first
        expect(row).to_contain_text(self.say("models.served_by", n=2 if self.lang == "zh" else 1))
        chip = row.locator(".model-chip").first
        assert chip.evaluate("e => getComputedStyle(e).backgroundColor") not in ("rgba(0, 0, 0, 0)", "transparent")
        self.check_page()
        self.shot("4-models")

    def connect_fastgpt(self) -> None:
        page = self.page
        self.open("nav.settings", self.say("set.connect"))
        assert self.server.admin_key not in page.content()  # masked until revealed
        page.locator(".code-block").get_by_role("button", name=self.say("copy.button"), exact=True).click()
        expect(page.get_by_text(self.say("copy.done"))).to_be_visible()
        copied = page.evaluate("navigator.clipboard.readText()")
        assert f"AIPROXY_API_TOKEN={self.server.admin_key}\n" in copied  # the whole key, pasteable into .env
        assert f"OPENAI_BASE_URL={self.server.url}/v1" in copied
        self.check_page()
        self.shot("5-settings")

    def logs(self, good: str) -> None:
        page = self.page
        self.open("nav.logs", self.say("logs.export"))
        rows = page.locator(".q-table tbody tr", has_text=good).filter(has_text=self.say("logs.test_badge"))
        for _ in range(40):  # the log writer flushes every half second
            if rows.count():
                break
            page.locator("button:has(i:text-is('refresh'))").click()
            page.wait_for_timeout(250)
        expect(rows.first).to_contain_text(self.say("logs.test_badge"))  # a model test, marked as one
        if not self.phone:
            middle = page.locator(".q-table__middle").first
            assert middle.evaluate("e => e.scrollWidth <= e.clientWidth"), "the log table is wider than 1440 px"
        if self.lang == "zh":
            assert "TTFB" not in page.locator(".q-page").first.inner_text()
        self.check_page()
        self.shot("6-logs")
        rows.first.click()
        detail = page.locator(".q-dialog", has_text=self.say("logs.detail_title"))
        expect(detail).to_contain_text(self.say("logs.test_call"))
        expect(detail).to_contain_text(good)
        self.check_page()
        page.keyboard.press("Escape")

    def failover_calls(self, good: str, keyless: str, hup: HealthUpstream) -> None:
        """Calls through the openai SDK while a channel above the good one answers 401: each fails over."""
        hup.set(keyless, status=401, message=LONG_REASON)
        self.server.add_channel(name=keyless, base_url=hup.url(keyless), models=["qwen-max"], priority=10,
                                key="sk-proj-" + "k" * 48)
        client = self.server.openai()
        for _ in range(FAILOVERS):  # the 401 auto-disables it after the third
            client.chat.completions.create(model="qwen-max", messages=[{"role": "user", "content": "hi"}])

    def dashboard(self, calls: int) -> None:
        """The dashboard counts calls as the logs do: failed-over calls once, and no error (model tests: none)."""
        page, say = self.page, self.say
        self.open("nav.logs", say("logs.export"))
        page.get_by_role("button", name=say("logs.kind_calls"), exact=True).click()
        for _ in range(40):  # the log writer flushes every half second
            if page.get_by_text(say("logs.total", n=calls), exact=True).count():
                break
            page.locator("button:has(i:text-is('refresh'))").click()
            page.wait_for_timeout(250)
        expect(page.get_by_text(say("logs.total", n=calls), exact=True)).to_be_visible()
        self.open("nav.dashboard", say("dash.chart_calls"))
        expect(page.locator(".text-2xl").first).to_have_text(str(calls))  # 33 attempts were 30 calls (issue 19)
        expect(page.locator(".text-2xl").nth(1)).to_have_text("0.0% (0)")
        expect(page.locator(".text-2xl").nth(6)).to_have_text(re.compile(r"^\$[\d.]+$"))  # spend, in USD
        self.check_page()
        self.shot("7-dashboard")

    def trail(self, keyless: str) -> None:
        """The newest call's routing trail names both channels, not only their numbers."""
        page = self.page
        self.open("nav.logs", self.say("logs.export"))
        page.get_by_role("button", name=self.say("logs.kind_calls"), exact=True).click()
        page.locator(".q-table tbody tr").first.click()  # the newest call; either walk's good channel took it
        trail = page.locator(".q-dialog").get_by_text(re.compile(r" → 401 .* → 200 "))
        expect(trail).to_contain_text(f"{keyless} (#")
        expect(trail).to_contain_text(re.compile(r"bailian (en|zh) \(#\d+\) → 200"))
        expect(page.locator(".q-dialog")).to_contain_text(self.say("logs.cost"))  # each call's cost
        self.check_page()
        self.shot("6-log-trail")
        page.keyboard.press("Escape")

    def channels_after(self, keyless: str, dead: str) -> None:
        """The auto-disabled channel's long reason: in the page's language, and the row's actions stay on screen at
        1440 px; switching a channel off names it."""
        page, say = self.page, self.say
        self.open("nav.channels", say("ch.add"))
        row = self.row(keyless)
        for _ in range(20):  # auto-disabling runs in the background after the third 401
            if say("ch.auto_disabled") in row.inner_text():
                break
            page.wait_for_timeout(250)
            page.reload()
        expect(row).to_contain_text(say("ch.auto_disabled"))
        expect(row).to_contain_text(say("ch.reason_upstream", code=401, message="Incorrect API key")[:12])
        if self.lang == "zh":
            expect(row).not_to_contain_text("from upstream")
        if not self.phone:
            for button in page.locator("tbody tr button:has(i:text-is('delete'))").all():
                box = button.bounding_box()
                assert box and box["x"] + box["width"] <= 1440, f"{self.name}: a delete button is off-screen: {box}"
            middle = page.locator(".q-table__middle").first
            assert middle.evaluate("e => e.scrollWidth <= e.clientWidth"), "the channel list is wider than 1440 px"
        self.check_page()
        self.shot("8-channels-after")
        self.row(dead).locator(".q-toggle").click()
        expect(page.locator(".q-notification", has_text=dead)).to_be_visible()

    def api_keys(self) -> None:
        """Create an API key, then edit its name, quota and expiry (issue 19: keys could not be edited)."""
        page, say = self.page, self.say
        self.open("nav.tokens", say("tok.create"))
        page.get_by_role("button", name=say("tok.create"), exact=True).click()
        dialog = page.locator(".q-dialog")
        dialog.get_by_label(say("tok.name"), exact=True).fill(f"app {self.lang}")
        dialog.get_by_role("button", name=say("tok.create_submit"), exact=True).click()
        page.locator(".q-dialog").get_by_role("button", name=say("tok.done"), exact=True).click()
        row = page.locator(".q-table tbody tr", has_text=f"app {self.lang}").first
        row.locator("button:has(i:text-is('edit'))").click()
        dialog = page.locator(".q-dialog", has_text=say("tok.edit_title", name=f"app {self.lang}"))
        dialog.get_by_label(say("tok.name"), exact=True).fill(f"app {self.lang} v2")
        dialog.get_by_label(say("tok.quota")).fill("5")
        dialog.get_by_role("button", name=say("tok.plus_days", n=30), exact=True).click()
        dialog.get_by_role("button", name=say("common.save"), exact=True).click()
        row = page.locator(".q-table tbody tr", has_text=f"app {self.lang} v2").first
        expect(row).to_contain_text(say("tok.spend_of", used="$0", quota="$5"))  # spend against the quota
        expect(row).not_to_contain_text(say("tok.never"))
        self.check_page()
        self.shot("9-api-keys")

    def channel_list_in_chinese(self) -> None:
        self.open("nav.channels", self.say("ch.add"))
        expect(self.page.locator(".q-table__bottom")).to_contain_text("第 1–")  # not Quasar's "1-2 of 2"
        self.check_page()
        self.shot("1-channels")


def test_the_ai_proxy_doc_journey_in_both_languages_at_desk_and_phone_width(start_app, upstream) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    server = start_app()
    hup = HealthUpstream().start()
    dead_port = free_port()  # nothing listens there
    timings: dict[str, dict[str, float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for lang, locale, phone, dark in (("en", "en-US", False, False), ("zh", "zh-CN", True, True)):
            context = browser.new_context(viewport={"width": 390, "height": 844} if phone else
                                          {"width": 1440, "height": 900}, locale=locale, timezone_id="Asia/Shanghai",
                                          is_mobile=phone, has_touch=phone,
                                          color_scheme="dark" if dark else "light")
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
            if phone:
                context.add_init_script(PLAIN_HTTP)  # copying falls back to execCommand
            page = context.new_page()
            page.set_default_timeout(15_000)
            expect.set_options(timeout=20_000)  # a busy 2-core CI box: three model tests can outlast 5 s
            walk = Walk(page, server, upstream, lang, phone, dark)
            good, dead, keyless = f"bailian {lang}", f"dead {lang}", f"keyless {lang}"
            try:
                walk.log_in()
                walk.add_channel(good)
                walk.add_dead_channel(dead, dead_port)
                walk.test_channels(good, dead, dead_port)
                if lang == "zh":
                    walk.channel_list_in_chinese()
                walk.models()
                walk.connect_fastgpt()
                walk.logs(good)
                walk.failover_calls(good, keyless, hup)
                walk.dashboard(FAILOVERS * (1 if lang == "en" else 2))  # the two walks share the server
                walk.trail(keyless)
                walk.channels_after(keyless, dead)
                walk.api_keys()
            except Exception:
                walk.shot("failed")  # what the page showed when a check failed
                raise
            timings[walk.name] = walk.timings
            context.close()
        browser.close()
    hup.stop()
    (SHOTS / "timings.json").write_text(json.dumps(timings, indent=1))  # page opens, in seconds: for a human look
    print("page opens (s):", timings)


# The browser answers every run_javascript 1.5 s late, as a busy machine's can: NiceGUI's own questions with a
# fixed 1 s timeout then end in a traceback in the gateway's log.
SLOW_JAVASCRIPT = """(() => {
  const slow = setInterval(() => {
    if (typeof window.runJavascript !== 'function') return;
    const answer = window.runJavascript;
    window.runJavascript = (code, id) => setTimeout(() => answer(code, id), 1500);
    window.slowJavascript = true;
    clearInterval(slow);
  }, 0);
})();"""


def test_a_slow_browser_leaves_no_traceback_and_the_menu_still_opens_the_navigation(start_app) -> None:
    server = start_app()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for width in (1440, 390):  # the drawer starts open at desk width and closed on a phone
            page = browser.new_page(viewport={"width": width, "height": 844})
            page.add_init_script(SLOW_JAVASCRIPT)
            page.goto(server.url + "/login")
            page.get_by_label(STRINGS["en"]["login.key"]).fill(server.admin_key)
            page.keyboard.press("Enter")
            expect(page.get_by_text(STRINGS["en"]["dash.chart_calls"])).to_be_visible(timeout=20_000)
            assert page.evaluate("window.slowJavascript === true"), "the slow answers were not in place"
            page.wait_for_timeout(2500)  # past any 1 s question the page asked on connect, and its late answer
            link = page.get_by_role("link", name=STRINGS["en"]["nav.logs"])
            menu = page.locator("header button:has(i:text-is('menu'))")
            if width > 800:  # the menu button closes the open drawer and opens it again
                expect(link).to_be_visible()
                menu.click()
                expect(link).not_to_be_visible()
                menu.click()
            else:  # on a phone it opens over the page, and a tap beside it closes it
                expect(link).not_to_be_visible()
                menu.click()
                expect(link).to_be_visible()
                page.mouse.click(width - 10, 400)
                expect(link).not_to_be_visible()
                menu.click()
            expect(link).to_be_visible()
            link.click()
            expect(page.get_by_text(STRINGS["en"]["logs.export"]).first).to_be_visible()
            page.close()
        browser.close()
    output = server.output_tail(400)
    assert "did not respond" not in output and "Traceback" not in output, output
